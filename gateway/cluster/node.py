"""One `smsgw run` node of a cluster: its pool, membership, queue store and wake-ups.

`ClusterNode.open` connects to PostgreSQL (the password from `[cluster]`'s file or
credential), applies the cluster schema, registers a new incarnation and starts the
heartbeats (`lease.Membership`). The node's queue store is a `ClusterQueue` under the
local store's field keys (every node must hold the same keyring: docs/ops/cluster.md).

Recovery: each heartbeat sweeps for lapsed incarnations and requeues their `sending`
rows flagged `possible_duplicate`; the sweeper then sends a NOTIFY, and every node
(the sweeper too) adopts the queued rows its scheduler does not know yet into its
heaps, so the survivors send what a dead node held. A poll behind the NOTIFY adopts
rows that waited longer than a lease with no node claiming them (a node that died with
queued messages in its heaps, not only `sending` ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import structlog
from prometheus_client import CollectorRegistry, Gauge
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from drivers.clock import Clock
from gateway.cluster.consent_store import merge_migrated
from gateway.cluster.lease import Membership, Pool
from gateway.cluster.nodes import Recovered
from gateway.cluster.queue_store import ClusterQueue
from gateway.cluster.schema import migrate
from gateway.cluster.settings import ClusterConfig
from gateway.cluster.wakeup import Notifier, Waker
from gateway.config import Config, ConfigError
from gateway.logs import exception_summary
from gateway.startup import StartupFault
from gateway.store.crypto import FieldCipher
from gateway.store.store import Store

log = structlog.get_logger("smsgw.cluster")

RECOVERED = "recovered"  # the NOTIFY payload after a sweep requeued a dead node's rows


class ClusterNode:
    def __init__(
        self,
        settings: ClusterConfig,
        conninfo: str,
        pool: Pool,
        membership: Membership,
        queue: ClusterQueue,
        clock: Clock,
    ) -> None:
        self.settings = settings
        self._pool = pool
        self.membership = membership
        self.queue = queue
        self._clock = clock
        self._notifier = Notifier(pool, clock)
        self._waker = Waker(conninfo, clock)
        self._tasks: list[asyncio.Task[None]] = []
        self.recovered_rows = 0
        self.adopted = 0

    @classmethod
    async def open(
        cls,
        settings: ClusterConfig,
        data_dir: Path,
        cipher: FieldCipher,
        master_key: bytes,
        clock: Clock,
    ) -> ClusterNode:
        password = settings.password(data_dir)
        extra: dict[str, Any] = {"application_name": f"smsgw-{settings.node_id}"}
        if password is not None:
            extra["password"] = password
        conninfo = make_conninfo(settings.conninfo, **extra)
        # One connection first: a refused or misconfigured one fails now, in one line,
        # not after the pool's retries.
        probe = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=10)
        await probe.close()
        pool: Pool = AsyncConnectionPool(
            conninfo, min_size=2, max_size=settings.pool_size, open=False
        )
        await pool.open(wait=True, timeout=30)
        try:
            async with pool.connection() as conn:
                await migrate(conn)
                merged = await merge_migrated(conn)  # SQLite's standing, once (i18-consent)
            if merged:
                log.info("consent_merged", rows=merged)
            node: ClusterNode | None = None

            def recovered(found: list[Recovered]) -> None:
                if node is not None:
                    node._recovered(found)

            membership = Membership(
                pool,
                settings.node_id,
                clock,
                lease=settings.lease_seconds,
                margin=settings.margin_seconds,
                interval=settings.heartbeat_seconds,
                on_recovered=recovered,
            )
            queue = ClusterQueue(pool, cipher, lambda: membership.me)
            queue.master_key = master_key
            node = cls(settings, conninfo, pool, membership, queue, clock)
            await membership.start()
        except BaseException:
            await pool.close()
            raise
        return node

    @property
    def fenced(self) -> bool:
        return not self.membership.fence.live

    def fence_check(self) -> None:
        """Raises `Fenced` once this node may no longer hand messages to a driver."""
        self.membership.fence.check()

    def describe(self) -> dict[str, object]:
        """For `/api/v1/healthz`: who this node is and whether its lease holds."""
        try:
            incarnation: int | None = self.membership.me.incarnation
        except Exception:
            incarnation = None
        return {
            "node_id": self.settings.node_id,
            "incarnation": incarnation,
            "lease": "fenced" if self.fenced else "live",
        }

    def start(self, adopt: Callable[[float], Awaitable[int]]) -> None:
        """Adopt recovered and unclaimed rows into this node's scheduler (`adopt(older
        than)` returns how many it took) on NOTIFY, and by polling behind it."""
        self._tasks.append(asyncio.create_task(self._adopting(adopt), name="cluster-adopt"))

    async def _adopting(self, adopt: Callable[[float], Awaitable[int]]) -> None:
        await self._waker.start()
        poll = self.settings.lease_seconds
        try:
            while True:
                woken = await self._waker.wait(RECOVERED, poll)
                # Woken: everything queued; else only rows nobody took for a lease.
                older_than = self._clock.time() + 1 if woken else self._clock.time() - poll
                try:
                    # Rows past their expiry that no scheduler holds end here.
                    await self.queue.expire_due(self._clock.time())
                    taken = await adopt(older_than)
                except Exception as e:  # the database is away: the next round retries
                    log.warning("adopt_failed", error=exception_summary(e))
                    continue
                if taken:
                    self.adopted += taken
                    log.info("queue_adopted", node=self.settings.node_id, count=taken)
        finally:
            await self._waker.stop()

    def _recovered(self, found: list[Recovered]) -> None:
        self.recovered_rows += sum(r.requeued for r in found)
        self._notifier.due(RECOVERED)

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """This node's series, labelled by node id, read at each scrape."""
        node = self
        series: list[tuple[str, str, Callable[[], float]]] = [
            (
                "smsgw_cluster_lease_live",
                "1 while this node's lease holds (it may claim and submit), 0 while fenced",
                lambda: 0.0 if node.fenced else 1.0,
            ),
            (
                "smsgw_cluster_recovered_rows",
                "Rows of dead nodes this node requeued since it started",
                lambda: float(node.recovered_rows),
            ),
            (
                "smsgw_cluster_adopted_rows",
                "Queued rows this node took into its scheduler from others since it started",
                lambda: float(node.adopted),
            ),
            (
                "smsgw_cluster_late_outcomes",
                "Outcomes this node recorded after its claim was lost, since it started",
                lambda: float(node.queue.late),
            ),
        ]
        for name, doc, read in series:
            Gauge(name, doc, ["node"], registry=registry).labels(
                self.settings.node_id
            ).set_function(read)

    async def stop(self) -> None:
        """Stop adopting and beating, and end the lease now: peers take back at once
        whatever is still `sending` here."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._notifier.aclose()
        try:
            await self.membership.stop(release=True)
        finally:
            await self._pool.close()


async def open_cluster(config: Config, store: Store, clock: Clock) -> ClusterNode:
    """This node of `[cluster]`, under the local store's field keys."""
    assert store.cipher is not None, "the store is open"
    try:
        return await ClusterNode.open(
            config.cluster, Path(config.data_dir), store.cipher, store.master_key, clock
        )
    except ValueError as e:  # a password file or credential that cannot be read
        raise ConfigError(str(e)) from None
    except (psycopg.Error, PoolTimeout, OSError) as e:  # libpq's text names no password
        raise StartupFault(
            f"cluster.conninfo: cannot reach PostgreSQL ({exception_summary(e)})"
        ) from None
