"""Message vocabulary shared by the store, scheduler and API."""

from __future__ import annotations

import enum
import os
import random
import threading
import time


class Priority(enum.IntEnum):
    """Priority classes; a lower value always goes first."""

    CRITICAL = 0
    HIGH = 1
    NORMAL = 2
    BULK = 3

    @property
    def label(self) -> str:
        return _LABELS[self]

    @classmethod
    def parse(cls, label: str) -> Priority:
        found = _BY_LABEL.get(label)  # twice per accept: the enum's lookup is Python
        return found if found is not None else cls[label.upper()]


_LABELS = {p: p.name.lower() for p in Priority}
_BY_LABEL = {label: p for p, label in _LABELS.items()}


class State(enum.StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    BLOCKED = "blocked"


# A member's `.value` runs Python (enum's descriptor) on every access; rows and answers
# take it per message.
STATE_VALUES = {s: s.value for s in State}
PRIORITY_LABELS = _LABELS  # `Priority.label` without the property's call


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every 10-bit value as two Crockford characters: 13 lookups encode 128 bits.
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)


class IdGenerator:
    """ULID-style ids: 48-bit milliseconds + 80 random bits, monotonic within a process.

    Sorting ids sorts messages by arrival, which the list API's cursor relies on. Ids
    are not secrets (every read is authorised), so the random part comes from a PRNG
    seeded by the OS, not a syscall per id.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(os.urandom(16))  # noqa: S311 - uniqueness, not secrecy
        self._last_ms = 0
        self._last_rand = 0

    def new(self) -> str:
        with self._lock:
            ms = int(time.time() * 1000)
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
            else:
                rand = self._random.getrandbits(79)
            self._last_ms, self._last_rand = ms, rand
        return encode_id((ms << 80) | rand)

    def new_many(self, count: int) -> list[str]:
        """`count` ids, as `count` calls of `new` in a row would give them (one lock and
        one clock read for a batch's messages)."""
        if count <= 0:
            return []
        with self._lock:
            ms = int(time.time() * 1000)
            if ms <= self._last_ms:
                ms = self._last_ms
                first = self._last_rand + 1
            else:
                first = self._random.getrandbits(79)
            self._last_ms, self._last_rand = ms, first + count - 1
        return encode_run((ms << 80) | first, count)


# An id's last two characters are its value's low 8 bits (shifted left by 2, as
# `encode_id` pads 128 bits to 130); the 24 before them depend only on the bits above.
_LOW_BITS = 8
_LAST_PAIR = tuple(_PAIRS[low << 2] for low in range(1 << _LOW_BITS))


def encode_run(first: int, count: int) -> list[str]:
    """`encode_id` of `first`, `first + 1`, ... (`count` of them): the 24 characters
    above the last two change once every 256 values, so they are encoded once each."""
    ids: list[str] = []
    last = _LAST_PAIR
    value, end = first, first + count
    while value < end:
        stop = min(end, ((value >> _LOW_BITS) + 1) << _LOW_BITS)
        prefix = encode_id(value)[:-2]
        ids.extend([prefix + last[v & 255] for v in range(value, stop)])
        value = stop
    return ids


def encode_id(value: int) -> str:
    """A 128-bit id value as 26 Crockford base-32 characters, most significant first."""
    v = value << 2  # 130 bits: 13 groups of 10
    p = _PAIRS
    # Written out: 1.5 us an id against 3.5 for a comprehension over the shifts.
    return "".join(
        (
            p[v >> 120],
            p[v >> 110 & 1023],
            p[v >> 100 & 1023],
            p[v >> 90 & 1023],
            p[v >> 80 & 1023],
            p[v >> 70 & 1023],
            p[v >> 60 & 1023],
            p[v >> 50 & 1023],
            p[v >> 40 & 1023],
            p[v >> 30 & 1023],
            p[v >> 20 & 1023],
            p[v >> 10 & 1023],
            p[v & 1023],
        )
    )


_IDS = IdGenerator()
new_message_id = _IDS.new
new_message_ids = _IDS.new_many  # a batch's ids, one lock and one clock read for all
