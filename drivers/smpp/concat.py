"""Inbound concatenated SMS: parts in, whole texts out, without I/O or a clock of its own.

Theory of operation. A part belongs to the set named by the caller's key (route,
sender, recipient: whatever makes references unique), the reference and its width, and
the part count it announces. `Reassembler.add` files a part and returns the whole text
when the last missing one arrives, whatever the order; the first copy of a part counts
and later copies are ignored. A part whose total differs from its set's is taken to
belong to another message that reuses the reference (8-bit references wrap after 256),
so the two sets never mix; each completes or expires on its own.

Time comes from the caller: `now` on every call, from a monotonic clock. A set expires
`timeout` seconds after its first part arrived; `next_deadline` says when the next one
does, and `expire(now)` hands back every set due by then as an `Incomplete`: the parts
that came, joined in order, with a marker where each missing part belongs, so the caller
can store a message flagged incomplete rather than lose it.

Memory is bounded. At most `max_sets` sets are open; a new set beyond that evicts the
oldest, which waits for the next `expire` (and makes `next_deadline` due at once). At
most `max_sets` evicted sets wait so; past that the oldest are dropped and counted in
`dropped`, for a caller that never calls `expire`.

An SMSC that gets no deliver_sm_resp (the link fell after the caller stored the message)
delivers the part again. So a completed set is remembered for `timeout` seconds as a
digest of each part: a part that matches one is a redelivery and is ignored, rather than
opening a set that would expire as a spurious incomplete message. A part with the same
reference but other text is a new message and starts a new set.

Keys and texts hold phone numbers and patient data: no repr or exception shows them.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from drivers.smpp.encoding import Concat

__all__ = ["DEFAULT_MAX_SETS", "DEFAULT_TIMEOUT", "Incomplete", "Reassembler", "missing_marker"]

DEFAULT_TIMEOUT = 300.0
DEFAULT_MAX_SETS = 10_000

# (caller's key, ref_bits, reference, total)
_SetId = tuple[tuple[str, ...], int, int, int]


def missing_marker(seq: int, total: int) -> str:
    """What stands in an incomplete text where part `seq` of `total` is missing."""
    return f"[part {seq} of {total} missing]"


@dataclass(frozen=True, slots=True)
class Incomplete:
    """A set given up on: `text` joins the parts received, with a marker for each gap."""

    key: tuple[str, ...] = field(repr=False)
    text: str = field(repr=False)
    reference: int
    ref_bits: int
    total: int
    received: tuple[int, ...]
    missing: tuple[int, ...]
    first_seen: float
    reason: Literal["timeout", "evicted"]


@dataclass(slots=True)
class _OpenSet:
    first_seen: float
    parts: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _DoneSet:
    forget_at: float
    digests: dict[int, bytes]


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class Reassembler:
    """Joins concatenated parts per key; see the module docstring."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, max_sets: int = DEFAULT_MAX_SETS) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        if max_sets < 1:
            raise ValueError("max_sets must be at least 1")
        self.timeout = timeout
        self.max_sets = max_sets
        self.dropped = 0
        self._open: dict[_SetId, _OpenSet] = {}
        self._done: dict[_SetId, _DoneSet] = {}
        self._evicted: deque[Incomplete] = deque()
        self._evicted_at: float | None = None

    def __repr__(self) -> str:
        return (
            f"Reassembler(open={len(self._open)}, evicted={len(self._evicted)}, "
            f"dropped={self.dropped}, timeout={self.timeout})"
        )

    def __len__(self) -> int:
        """Sets open now."""
        return len(self._open)

    def add(self, key: tuple[str, ...], concat: Concat, text: str, now: float) -> str | None:
        """File one part; the whole text if that completed its set, else None."""
        if concat.total == 1:
            return text
        set_id: _SetId = (key, concat.ref_bits, concat.reference, concat.total)
        done = self._done.get(set_id)
        if done is not None:
            if now < done.forget_at and done.digests.get(concat.seq) == _digest(text):
                return None
            del self._done[set_id]
        entry = self._open.get(set_id)
        if entry is None:
            if len(self._open) >= self.max_sets:
                self._evict_oldest(now)
            entry = self._open[set_id] = _OpenSet(now)
        entry.parts.setdefault(concat.seq, text)
        if len(entry.parts) < concat.total:
            return None
        del self._open[set_id]
        self._remember(set_id, entry, now)
        return "".join(entry.parts[seq] for seq in range(1, concat.total + 1))

    def next_deadline(self) -> float | None:
        """When `expire` next has something to return; None while nothing is open."""
        oldest = next(iter(self._open.values()), None)
        deadlines = [] if oldest is None else [oldest.first_seen + self.timeout]
        if self._evicted_at is not None:
            deadlines.append(self._evicted_at)
        return min(deadlines, default=None)

    def expire(self, now: float) -> list[Incomplete]:
        """Sets evicted, then those whose first part is `timeout` old, oldest first."""
        expired = list(self._evicted)
        self._evicted.clear()
        self._evicted_at = None
        while self._open:
            set_id, entry = next(iter(self._open.items()))
            if entry.first_seen + self.timeout > now:
                break
            del self._open[set_id]
            expired.append(_incomplete(set_id, entry, "timeout"))
        while self._done:
            set_id, done = next(iter(self._done.items()))
            if done.forget_at > now:
                break
            del self._done[set_id]
        return expired

    def _evict_oldest(self, now: float) -> None:
        set_id, entry = next(iter(self._open.items()))
        del self._open[set_id]
        self._evicted.append(_incomplete(set_id, entry, "evicted"))
        if self._evicted_at is None:
            self._evicted_at = now
        if len(self._evicted) > self.max_sets:
            self._evicted.popleft()
            self.dropped += 1

    def _remember(self, set_id: _SetId, entry: _OpenSet, now: float) -> None:
        digests = {seq: _digest(text) for seq, text in entry.parts.items()}
        self._done[set_id] = _DoneSet(now + self.timeout, digests)
        if len(self._done) > self.max_sets:
            del self._done[next(iter(self._done))]


def _incomplete(
    set_id: _SetId, entry: _OpenSet, reason: Literal["timeout", "evicted"]
) -> Incomplete:
    key, ref_bits, reference, total = set_id
    seqs = range(1, total + 1)
    text = "".join(
        entry.parts[seq] if seq in entry.parts else missing_marker(seq, total) for seq in seqs
    )
    return Incomplete(
        key=key,
        text=text,
        reference=reference,
        ref_bits=ref_bits,
        total=total,
        received=tuple(sorted(entry.parts)),
        missing=tuple(seq for seq in seqs if seq not in entry.parts),
        first_seen=entry.first_seen,
        reason=reason,
    )
