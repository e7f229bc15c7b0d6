"""Message vocabulary shared by the store, scheduler and API."""

from __future__ import annotations

import enum
import os
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
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> Priority:
        return cls[label.upper()]


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


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class IdGenerator:
    """ULID-style ids: 48-bit milliseconds + 80 random bits, monotonic within a process.

    Sorting ids sorts messages by arrival, which the list API's cursor relies on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._last_rand = 0

    def new(self) -> str:
        with self._lock:
            ms = int(time.time() * 1000)
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
            else:
                rand = int.from_bytes(os.urandom(10), "big") >> 1
            self._last_ms, self._last_rand = ms, rand
        value = (ms << 80) | (rand & ((1 << 80) - 1))
        chars = []
        for _ in range(26):
            chars.append(_CROCKFORD[value & 31])
            value >>= 5
        return "".join(reversed(chars))


new_message_id = IdGenerator().new
