"""This node's membership: heartbeats that renew its lease, and fencing itself.

Theory of operation. The lease lives in the database (`nodes.lease_until`, set on the
database's clock to now + `lease` at each renewal); other nodes recover our `sending`
rows once it lapses there. We cannot read the database's clock, so we keep our own
deadline on the local monotonic clock: a renewal sent at local time s is answered with
a lease that ends no earlier than s + `lease` (the database stamped it after we sent
it), so our `Fence` stays live until s + `lease` - `margin`, `margin` covering clock
rate drift and the time between our check and a submit leaving. Past that deadline
without a renewal the node is *fenced*: `Fence.check()` refuses every claim and every
submit, before anyone else could take its rows. A later renewal that succeeds (the
lease had not lapsed in the database after all) lifts the fence; a refused one means
the lease is gone (lapsed or superseded): the node registers a new incarnation and
carries on under it, while its old claims are recovered by whoever sweeps first; then
`on_rejoined` runs (the node's scheduler keeps only the rows it still holds, under the
new incarnation: `Scheduler.rehold`), retried at each heartbeat until it succeeds. A
renewal that could not be asked calls `on_unreachable` (the node's requests then answer
503 at once: `db_breaker.py`).

After each successful renewal the node sweeps for lapsed leases (`nodes.recover_expired`),
first finishing what it still owes (`before_sweep`: the outcome journal's replay), so
that its own rows of an outage it outlived are recorded rather than taken back.
Whatever must stop the moment the node fences itself (its SMPP binds, `bindslots.py`)
registers with `on_fenced`: the callbacks run as the fence falls, with `margin` seconds
at least before the lease can lapse in the database.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from drivers.clock import Clock, wait_event
from gateway.cluster import nodes
from gateway.cluster.nodes import Incarnation, Recovered
from gateway.logs import exception_summary

log = structlog.get_logger("smsgw.cluster")

Pool = AsyncConnectionPool[AsyncConnection[TupleRow]]


class Fenced(Exception):
    """This node may not claim or submit now: its lease may have lapsed."""


class Fence:
    """Our own view of our lease, on the local monotonic clock."""

    def __init__(self, clock: Clock, lease: float, margin: float) -> None:
        if not 0 < margin < lease:
            raise ValueError("the margin must be above 0 and below the lease")
        self._clock = clock
        self.lease = lease
        self.margin = margin
        self.deadline = -math.inf

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at monotonic `sent_at` succeeded."""
        self.deadline = max(self.deadline, sent_at + self.lease - self.margin)

    def lost(self) -> None:
        self.deadline = -math.inf

    @property
    def live(self) -> bool:
        return self._clock.monotonic() < self.deadline

    def check(self) -> None:
        """Call before a claim and before handing a message to a driver."""
        if not self.live:
            raise Fenced("lease not renewed in time")


class Membership:
    """Registers this node, renews its lease, fences it, and sweeps for dead nodes."""

    def __init__(
        self,
        pool: Pool,
        node_id: str,
        clock: Clock,
        *,
        lease: float = 10.0,
        margin: float = 3.0,
        interval: float = 2.0,
        on_recovered: Callable[[list[Recovered]], None] | None = None,
        before_sweep: Callable[[], Awaitable[object]] | None = None,
        on_rejoined: Callable[[], Awaitable[object]] | None = None,
        on_unreachable: Callable[[str], None] | None = None,
    ) -> None:
        if interval >= lease - margin:
            raise ValueError("heartbeats must come more often than the fence deadline")
        self._pool = pool
        self.node_id = node_id
        self._clock = clock
        self._interval = interval
        self._on_recovered = on_recovered
        self._before_sweep = before_sweep
        self._on_rejoined = on_rejoined
        self._on_unreachable = on_unreachable
        self._rejoin_owed = False  # registered anew, and `on_rejoined` has not succeeded
        self.fence = Fence(clock, lease, margin)
        self._me: Incarnation | None = None
        self.fenced = asyncio.Event()  # set while fenced (for logs, metrics and tests)
        self._renewal = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._on_fenced: list[Callable[[], None]] = []

    def on_fenced(self, callback: Callable[[], None]) -> None:
        """Call `callback()` each time this node fences itself (synchronously, from
        the task that noticed: it must only start what it has to do)."""
        self._on_fenced.append(callback)

    @property
    def me(self) -> Incarnation:
        if self._me is None:
            raise Fenced("not registered")
        return self._me

    async def start(self) -> None:
        await self._register()
        self._tasks = [
            asyncio.create_task(self._beat(), name="cluster-heartbeat"),
            asyncio.create_task(self._watch(), name="cluster-fence"),
        ]

    async def stop(self, *, release: bool = True) -> None:
        """Stop beating; `release` ends the lease now so that peers take back at once
        whatever is still `sending` (after the caller drained what it could)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if release and self._me is not None:
            async with self._pool.connection() as conn:
                await conn.execute(
                    "UPDATE nodes SET lease_until = least(lease_until, clock_timestamp())"
                    " WHERE incarnation = %s",
                    (self._me.incarnation,),
                )
        self.fence.lost()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds, looked at after every change of state."""
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def _note_change(self) -> None:
        self._changed.set()

    async def _register(self) -> None:
        sent = self._clock.monotonic()
        async with self._pool.connection() as conn:
            self._me = await nodes.register(conn, self.node_id, self.fence.lease)
        self.fence.renewed(sent)
        self._lift()
        log.info("node_registered", node=self.node_id, incarnation=self._me.incarnation)

    def _lift(self) -> None:
        if self.fenced.is_set():
            self.fenced.clear()
            log.warning("node_unfenced", node=self.node_id)
        self._renewal.set()
        self._note_change()

    async def _renew(self) -> bool | None:
        """True renewed, False refused (the lease is gone), None could not ask."""
        limit = max(0.0, self.fence.deadline - self._clock.monotonic()) or self._interval
        try:
            async with asyncio.timeout(limit):
                async with self._pool.connection(timeout=limit) as conn:
                    return await nodes.renew(conn, self.me, self.fence.lease)
        except (psycopg.Error, PoolTimeout, TimeoutError, OSError) as e:
            log.warning("lease_renewal_failed", node=self.node_id, error=exception_summary(e))
            if self._on_unreachable is not None:  # requests stop waiting for it
                self._on_unreachable(type(e).__name__)
            return None

    async def _beat(self) -> None:
        while True:
            await self._clock.sleep(self._interval)
            sent = self._clock.monotonic()
            renewed = await self._renew()
            try:
                if renewed:
                    self.fence.renewed(sent)
                    self._lift()
                    if self._rejoin_owed:
                        await self._rejoined()
                    await self._sweep()
                elif renewed is False:
                    old = self.me.incarnation
                    self.fence.lost()
                    self._fence()
                    log.warning("lease_lost", node=self.node_id, incarnation=old)
                    await self._register()
                    self._rejoin_owed = True
                    await self._rejoined()
            except (psycopg.Error, PoolTimeout, OSError) as e:
                log.warning("heartbeat_failed", node=self.node_id, error=exception_summary(e))

    async def _rejoined(self) -> None:
        """Under a new incarnation after a lost lease: `on_rejoined` (the node takes its
        scheduler's rows back under it), again at each heartbeat until it succeeds."""
        if self._on_rejoined is not None:
            try:
                await self._on_rejoined()
            except Exception as e:  # the database went away again: the next beat retries
                log.warning("rejoin_failed", node=self.node_id, error=exception_summary(e))
                return
        self._rejoin_owed = False
        self._note_change()

    async def _sweep(self) -> None:
        if self._before_sweep is not None:
            try:
                await self._before_sweep()
            except Exception as e:  # it must not keep the sweep from running
                log.warning("before_sweep_failed", node=self.node_id, error=exception_summary(e))
        async with self._pool.connection() as conn:
            recovered = await nodes.recover_expired(conn, self.me)
        for r in recovered:
            log.warning(
                "node_recovered", node=r.node_id, incarnation=r.incarnation, requeued=r.requeued
            )
        if recovered and self._on_recovered is not None:
            self._on_recovered(recovered)

    def _fence(self) -> None:
        if not self.fenced.is_set():
            self.fenced.set()
            log.error("node_fenced", node=self.node_id)
            self._note_change()
            for callback in self._on_fenced:
                try:
                    callback()
                except Exception as e:  # one listener's bug must not keep the others
                    log.error("fenced_callback_failed", error=exception_summary(e))

    async def _watch(self) -> None:
        """Set `fenced` the moment the local deadline passes without a renewal."""
        while True:
            remaining = self.fence.deadline - self._clock.monotonic()
            self._renewal.clear()
            if remaining > 0:
                await wait_event(self._clock, self._renewal, remaining)
                continue
            self._fence()
            await self._renewal.wait()
