"""The requests a session awaits answers to: by sequence, by deadline, and counted.

A `Session` asks on every submit whether its window has room and when its next
response timer fires; the counts and a heap of deadlines kept beside the table answer
in O(1) and O(log n), not a walk over the window. Sans-I/O, as the session.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from drivers.smpp.pdu import Command
from drivers.smpp.session_events import InFlight
from drivers.smpp.session_rules import CONTROL


class InFlightTable:
    """A session's requests awaiting a response, in the order sent."""

    def __init__(self) -> None:
        self._pending: dict[int, InFlight] = {}
        self.outstanding = 0  # pending requests of the caller's (not control PDUs)
        self.probes = 0  # enquire_links of ours awaiting an answer
        self._deadlines: list[tuple[float, int]] = []  # heap; stale entries skipped

    def __iter__(self) -> Iterator[InFlight]:
        return iter(self._pending.values())

    def get(self, sequence: int) -> InFlight | None:
        return self._pending.get(sequence)

    def track(self, pending: InFlight) -> None:
        self._pending[pending.sequence] = pending
        heapq.heappush(self._deadlines, (pending.deadline, pending.sequence))
        if len(self._deadlines) > 2 * len(self._pending) + 64:
            # Answered entries behind a slow one pile up; rebuild from what is pending.
            self._deadlines = [(p.deadline, p.sequence) for p in self._pending.values()]
            heapq.heapify(self._deadlines)
        if pending.command is Command.ENQUIRE_LINK:
            self.probes += 1
        elif pending.command not in CONTROL:
            self.outstanding += 1

    def untrack(self, sequence: int) -> InFlight:
        pending = self._pending.pop(sequence)
        if pending.command is Command.ENQUIRE_LINK:
            self.probes -= 1
        elif pending.command not in CONTROL:
            self.outstanding -= 1
        return pending

    def first_due(self) -> InFlight | None:
        """The pending request with the earliest deadline; drops answered ones' entries."""
        heap = self._deadlines
        while heap:
            deadline, sequence = heap[0]
            pending = self._pending.get(sequence)
            if pending is not None and pending.deadline == deadline:
                return pending
            heapq.heappop(heap)
        return None

    def clear(self) -> None:
        self._pending.clear()
        self.outstanding = self.probes = 0
        self._deadlines.clear()
