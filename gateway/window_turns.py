"""Whose turn it is at a route's carrier window: the most urgent dispatched group first.

A route's groups are claimed ahead of its window (`RouteRuntime.dispatch_limit`), so
under a backlog several claimed groups wait for the window's slots at once. They used
to take turns first come, first served, each holding the turn until all of its messages
had a slot: a critical message claimed behind a window or more of bulk waited for every
one of them to reach the carrier (S6, `bench/README.md`). Here the waiting groups are
served by class, then in the order they came (so one class keeps its order), and the
group holding the turn gives it up between chunks whenever a more urgent one waits: a
critical waits for at most the chunk being handed over, never for a bulk backlog. The
carrier's window itself is untouched (the route's slots).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class WindowTurns:
    def __init__(self) -> None:
        self._held = False
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.passed = 0  # turns given to a more urgent group mid-way (a metric for tests)
        self.queued = asyncio.Event()  # set whenever a group starts waiting (for tests)

    def ticket(self, priority: int) -> tuple[int, int]:
        """A group's place: its most urgent class, then its arrival (kept across turns)."""
        return priority, next(self._order)

    async def acquire(self, ticket: tuple[int, int]) -> None:
        if not self._held and not self._waiting:
            self._held = True
            return
        future = asyncio.get_running_loop().create_future()
        entry = (*ticket, future)
        heapq.heappush(self._waiting, entry)
        self.queued.set()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed the turn just as it was cancelled: pass it on
            elif entry in self._waiting:  # not skipped by a `release` meanwhile
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            raise

    def release(self) -> None:
        while self._waiting:
            *_, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)  # the turn goes straight to it: still held
                return
        self._held = False

    def waiting(self) -> list[tuple[int, int]]:
        """The tickets waiting for the turn, in the order they will get it."""
        return [entry[:2] for entry in sorted(self._waiting) if not entry[2].done()]

    def more_urgent(self, ticket: tuple[int, int]) -> bool:
        """Does a group that should go before `ticket` wait for the turn?"""
        return bool(self._waiting) and self._waiting[0][:2] < ticket
