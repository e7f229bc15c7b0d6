"""The carrier's side of a shared rate: submits per 1 s window in the SMSC simulator's
submit log (`SubmitRecord.at`, the loop's clock), for the cluster tests and
`bench/cluster.py`; and the stalls of the loop that measures them."""

from __future__ import annotations

import asyncio

from drivers.smpp.simulator import SubmitRecord
from drivers.smpp.status import Status


def max_in_window(log: list[SubmitRecord], start: float, end: float) -> int:
    """The most submits accepted in any 1 s window within [start, end]."""
    times = sorted(r.at for r in log if start <= r.at <= end and r.status == Status.ESME_ROK)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


class LoopStalls:
    """When the measuring process's own event loop stood still (the simulator runs in
    it): a carrier's token bucket stamps submits when they are read, so a stall of the
    reader bunches a second's evenly spread submits into one instant and throttles them.
    A throttle is the gateway's fault only if no such stall explains it."""

    TICK = 0.02
    STALL = 0.1  # a tick this late is a stall

    def __init__(self) -> None:
        self.stalls: list[tuple[float, float]] = []  # (loop time it began, ended)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.TICK)
            after = loop.time()
            if after - before - self.TICK >= self.STALL:
                self.stalls.append((before, after))

    def unexplained(self, log: list[SubmitRecord], after: float = 0.5) -> list[SubmitRecord]:
        """The throttled submits not read within `after` s of a stall's end: the
        bucket is drained by the stall's bunch (~a quarter second's worth here) and
        refills while the backlog is read, so a stall's throttles come right after it."""
        return [
            r
            for r in log
            if r.status == Status.ESME_RTHROTTLED
            and not any(end <= r.at <= end + after for _, end in self.stalls)
        ]

    def readable(self, log: list[SubmitRecord], after: float = 0.5) -> list[SubmitRecord]:
        """The submits read away from any stall (not during one, nor within `after` s of
        its end): a stall bunches a second's submits into one reading instant, so a 1 s
        window around it counts what the carrier got over more than a second."""
        return [
            r for r in log if not any(begin <= r.at <= end + after for begin, end in self.stalls)
        ]
