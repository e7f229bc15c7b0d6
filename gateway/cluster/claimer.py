"""A node's claim loop for one route group: fenced, woken by NOTIFY, polling behind it.

`Claimer.take` returns the next claimed batch (at least one message), waiting while
there is none: until the group is notified, the poll interval passes, or the account's
buckets hold a token again (the claim says when). It refuses to claim while the node is
fenced, and turns the database's refusal (the lease ended there) into the same
`Fenced`, so the caller has one thing to handle: stop sending, let membership rejoin.
"""

from __future__ import annotations

import asyncio

from drivers.clock import Clock
from gateway.cluster.claims import Claimed, claim
from gateway.cluster.lease import Fenced, Membership, Pool
from gateway.cluster.nodes import LeaseLost
from gateway.cluster.wakeup import Waker

POLL_INTERVAL = 1.0


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

    async def take(
        self, group: str, route: str, want: int, *, account: str | None = None
    ) -> list[Claimed]:
        while True:
            self._membership.fence.check()
            me = self._membership.me
            try:
                async with self._pool.connection() as conn:
                    result = await claim(
                        conn, me, group, route, want, self._clock.time(), account=account
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
                else:
                    await self._waker.wait(group, wait)
            finally:
                self.waiting.clear()
