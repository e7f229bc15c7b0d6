"""A node's claim loop for one route group: fenced, woken by NOTIFY, polling behind it.

`Claimer.take` returns the next claimed batch (at least one message), waiting while
there is none: until the group is notified, the poll interval passes, or the account's
buckets hold a token again (the claim says when). It refuses to claim while the node is
fenced, and turns the database's refusal (the lease ended there) into the same
`Fenced`, so the caller has one thing to handle: stop sending, let membership rejoin.
Each group is read from this claimer's floors (`claim_floor.py`), swept for rows below
them before a claim, in a transaction of its own: every `SWEEP_EVERY` seconds, and after
a NOTIFY woke it (new work may be a requeue under a floor), at most every
`WAKE_SWEEP_GAP` seconds (a burst of accepts wakes it often).
"""

from __future__ import annotations

import asyncio
import math

from drivers.clock import Clock
from gateway.cluster.claim_floor import SWEEP_EVERY, ClaimFloors
from gateway.cluster.claims import Claimed, claim
from gateway.cluster.lease import Fenced, Membership, Pool
from gateway.cluster.nodes import LeaseLost
from gateway.cluster.wakeup import Waker

POLL_INTERVAL = 1.0
WAKE_SWEEP_GAP = 0.25  # seconds between sweeps a NOTIFY asks for


class Claimer:
    def __init__(
        self,
        pool: Pool,
        membership: Membership,
        clock: Clock,
        waker: Waker | None = None,
        *,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self._pool = pool
        self._membership = membership
        self._clock = clock
        self._waker = waker
        self._poll = poll_interval
        self.claims = 0  # claim transactions run (for tests and metrics)
        self.waiting = asyncio.Event()  # set while `take` waits for work or tokens
        self.floors = ClaimFloors()
        self._next_sweep: dict[str, float] = {}  # per group, on the monotonic clock
        self._woken_sweep: dict[str, float] = {}  # per group: the last one a NOTIFY asked

    async def take(
        self, group: str, route: str, want: int, *, account: str | None = None
    ) -> list[Claimed]:
        while True:
            self._membership.fence.check()
            me = self._membership.me
            try:
                async with self._pool.connection() as conn:
                    if self._clock.monotonic() >= self._next_sweep.get(group, 0.0):
                        async with conn.transaction():
                            await self.floors.sweep(conn, group)
                        self._next_sweep[group] = self._clock.monotonic() + SWEEP_EVERY
                    result = await claim(
                        conn,
                        me,
                        group,
                        route,
                        want,
                        self._clock.time(),
                        account=account,
                        floors=self.floors,
                    )
            except LeaseLost as e:
                raise Fenced("lease ended in the database") from e
            self.claims += 1
            if result.claimed:
                return result.claimed
            wait = min(self._poll, result.retry_after) if result.retry_after else self._poll
            self.waiting.set()
            try:
                if self._waker is None:
                    await self._clock.sleep(wait)
                elif await self._waker.wait(group, wait):
                    self._sweep_soon(group)
            finally:
                self.waiting.clear()

    def _sweep_soon(self, group: str) -> None:
        now = self._clock.monotonic()
        if now - self._woken_sweep.get(group, -math.inf) >= WAKE_SWEEP_GAP:
            self._woken_sweep[group] = now
            self._next_sweep[group] = now
