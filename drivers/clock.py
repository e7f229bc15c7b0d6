"""Injected time.

Everything that waits or timestamps takes a `Clock`: the scheduler, rate limiters,
drivers' timers. Production uses `SystemClock`; tests use `FakeClock` and move time by
hand with `advance()`, so no test sleeps.

`time()` is UTC wall-clock seconds (timestamps, `send_at`, `expires_at`); `monotonic()`
is for intervals (token buckets, back-off, timeouts) and never jumps.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when a test calls `advance()`."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._wall = start
        self._mono = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._changed: asyncio.Event | None = None

    def time(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + seconds, next(self._seq), fut))
        self._sleeping_changed().set()
        await fut

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._wall += seconds
        self._mono += seconds
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def _sleeping_changed(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    @property
    def sleeping(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())

    async def wait_sleeping(self, count: int) -> None:
        """Return once at least `count` tasks are asleep on this clock."""
        changed = self._sleeping_changed()
        while self.sleeping < count:
            changed.clear()
            await changed.wait()

    @property
    def next_deadline(self) -> float | None:
        """Seconds until the earliest pending sleeper wakes, or None."""
        live = [d for d, _, f in self._sleepers if not f.done()]
        return min(live) - self._mono if live else None


async def wait_event(clock: Clock, event: asyncio.Event, limit: float | None) -> bool:
    """Wait for `event` or until `limit` seconds pass on `clock`; True if it was set."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    if limit is None:
        await waiter
        return True
    sleeper = asyncio.ensure_future(clock.sleep(limit))
    try:
        await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, sleeper):
            if not task.done():
                task.cancel()
    return event.is_set()


class AdjustableClock(SystemClock):
    """The real clock, that a demo may move forward (`advance`), never back.

    Only the embedded default's demo uses it (`POST /api/v1/demo/clock/advance`), so a
    newcomer can see tomorrow's reminders go out now. Both `time()` and `monotonic()`
    move together, as with `FakeClock`, and a sleeper whose deadline the jump passes
    wakes at once."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._advanced: asyncio.Event | None = None

    @property
    def offset(self) -> float:
        return self._offset

    def time(self) -> float:
        return time.time() + self._offset

    def monotonic(self) -> float:
        return time.monotonic() + self._offset

    async def sleep(self, seconds: float) -> None:
        deadline = self.monotonic() + max(0.0, seconds)
        while (remaining := deadline - self.monotonic()) > 0:
            if self._advanced is None:
                self._advanced = asyncio.Event()
            advanced = self._advanced
            try:
                await asyncio.wait_for(advanced.wait(), remaining)
            except TimeoutError:
                return
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._offset += seconds
        if self._advanced is not None:
            self._advanced.set()
            self._advanced = None
