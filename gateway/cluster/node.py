"""One `smsgw run` node of a cluster: its pool, membership, queue store and wake-ups.

`ClusterNode.open` connects to PostgreSQL (the password from `[cluster]`'s file or
credential), applies the cluster schema, registers a new incarnation and starts the
heartbeats (`lease.Membership`). The node's queue store is a `ClusterQueue` under the
local store's field keys (every node must hold the same keyring: docs/ops/cluster.md).

Recovery: each heartbeat sweeps for lapsed incarnations and requeues their `sending`
rows flagged `possible_duplicate`; the sweeper then sends a NOTIFY, and every node
(the sweeper too) adopts the queued rows no live node holds (the dead node's queued
and requeued ones) into its heaps in pages (`adoption.py`), each row by one survivor,
so the survivors send what a dead node held without racing for the same rows. A poll
behind the NOTIFY adopts unheld rows due more than a lease ago. A node that lost its
lease and rejoined takes back the rows its scheduler holds that no peer adopted
meanwhile and drops the others (`rehold`).

Panel users and sessions are shared (`panel.py`): the users in the node's own SQLite
at its first start are copied up once, before the first request.

Outcomes the database would not take for `outcome_retry_seconds` wait in the node's
local journal (`outcome_journal.py`): what a previous run left is replayed at open,
before this incarnation registers; the rest before each of the node's recovery sweeps
and after its next recorded round. Old incarnations' `nodes` and `node_routes` rows are
pruned from the upkeep loop, one node at a time (`nodes.prune_gone`).

Keys and audit: the queue's cipher is built from the shared keyring
(`shared_keys.py`) and takes up a rotation made on any node at the next heartbeat; the
node's audit entries are copied into its chain in PostgreSQL and anchors written
(`audit_ship.py`), so `smsgw audit verify --postgresql` covers every running node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import structlog
from prometheus_client import CollectorRegistry, Gauge, Histogram
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import PoolTimeout

from drivers.clock import Clock
from gateway.cluster import buckets, critical_lane
from gateway.cluster.adoption import ClusterAdoption
from gateway.cluster.audit_ship import AuditShipper, ChainDiverged
from gateway.cluster.bindslots import ClusterBindSlots
from gateway.cluster.checked import CheckedAsyncConnection
from gateway.cluster.clinical_thread import ClinicalThreads
from gateway.cluster.consent_store import merge_migrated
from gateway.cluster.db_breaker import Breaker
from gateway.cluster.dlr_wishes import SharedDlrWishes
from gateway.cluster.horizon import HorizonWatch
from gateway.cluster.inbound import ClusterInbound
from gateway.cluster.inbound_reads import ClusterInboundReads
from gateway.cluster.lease import Membership, Pool
from gateway.cluster.nodes import Recovered, prune_gone
from gateway.cluster.outbox_lanes import LaneLocks
from gateway.cluster.outbox_store import ClusterOutbox
from gateway.cluster.outcome_journal import OutcomeJournal
from gateway.cluster.panel import ClusterPanel
from gateway.cluster.queue_store import ClusterQueue
from gateway.cluster.reads import ClusterReads
from gateway.cluster.reconnect import restart_attempts
from gateway.cluster.schema import migrate
from gateway.cluster.seal_guard import GuardedPool
from gateway.cluster.session import session_options
from gateway.cluster.settings import ClusterConfig
from gateway.cluster.shared_keys import KeyringMismatch, KeyringWatch, check_same, shared_keys
from gateway.cluster.shared_rate import SharedRate
from gateway.cluster.status import NodeView, PublishedRoute, cluster_status, publish_routes
from gateway.cluster.tokens import ClusterTokens
from gateway.cluster.wakeup import RECONNECT_DELAY, Notifier, Waker
from gateway.config import Config, ConfigError
from gateway.logs import exception_summary
from gateway.startup import StartupFault
from gateway.store import crypto
from gateway.store.audit_log import audit_key
from gateway.store.panel_sql import AdminRepo
from gateway.store.store import Store

if TYPE_CHECKING:
    from gateway.scheduler import AdoptSource

log = structlog.get_logger("smsgw.cluster")

RECOVERED = "recovered"  # the NOTIFY payload after a sweep requeued a dead node's rows
# The claim's latency buckets (seconds): S9's "claim p99 < 100 ms" reads off them.
CLAIM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)
# libpq's connect_timeout unless the conninfo sets one: a connection attempt to a silent
# host (a dead primary) gives up then, not after the kernel's SYN retries (about 2 min),
# so the pool's next attempt keeps to `reconnect_max_delay` (`reconnect.py`).
CONNECT_TIMEOUT = 5
CLINICAL_THREADS = 4  # connections for keyed clinical jobs, beside the pool's
PRUNE_EVERY = 3600.0  # seconds between prunings of old incarnations (at most)
# `Scheduler.adopt`: takes in what a source's pages hold, due before a time.
Adopt = Callable[["AdoptSource", float], Awaitable[int]]
Rehold = Callable[["AdoptSource"], Awaitable[int]]  # `Scheduler.rehold`


class ClusterNode:
    def __init__(
        self,
        settings: ClusterConfig,
        conninfo: str,
        pool: GuardedPool,
        membership: Membership,
        queue: ClusterQueue,
        clock: Clock,
        keys: KeyringWatch,
        shipper: AuditShipper,
        store: Store,
    ) -> None:
        self.settings = settings
        self._pool = pool
        # Keyed clinical jobs (HL7 inbound) on connections of their own threads.
        self.clinical_threads = ClinicalThreads(conninfo, min(CLINICAL_THREADS, settings.pool_size))
        self.membership = membership
        self.queue = queue
        self.reads = ClusterReads(pool, queue.cipher, keys)
        # Inbound messages: filed and read in the shared tables (`inbound.py`).
        self.inbound = ClusterInbound(
            pool, queue.cipher, store, settings.node_id, keys, lambda: membership.me
        )
        self.inbound_reads = ClusterInboundReads(pool, queue.cipher, keys)
        # Kannel dlr-urls: written with the shared messages, read by the lane's leader.
        self.dlr_wishes = SharedDlrWishes(pool, queue.cipher, keys)
        self.keys = keys
        self.shipper = shipper
        self.tokens = ClusterTokens(pool)
        self.panel = ClusterPanel(pool, queue.cipher, keys, AdminRepo(store), settings.node_id)
        self._store = store
        self._clock = clock
        self._notifier = Notifier(pool, clock)
        self._waker = Waker(
            conninfo, clock, reconnect_delay=min(RECONNECT_DELAY, settings.reconnect_max_delay)
        )
        self._conninfo = conninfo
        self.horizon = HorizonWatch(pool, clock, settings.heartbeat_seconds)
        self._tasks: list[asyncio.Task[None]] = []
        self.recovered_rows = 0
        self.adopted = 0
        self.adoption = ClusterAdoption(pool, lambda: queue.cipher, lambda: membership.me)
        self._given_up: list[str] = []  # accepted here for other nodes: to be released
        self._urgent_given_up = False  # a critical among them
        self._giving_up: asyncio.Task[None] | None = None
        self.bind_slots: dict[str, ClusterBindSlots] = {}  # per route with max_binds
        # This node's routes and their health, published every heartbeat.
        self.route_health: Callable[[], list[PublishedRoute]] = list
        self.shared_rates: list[SharedRate] = []  # their last statements end before the pool
        # `Scheduler.rehold`: after a rejoin, its rows back under the new incarnation.
        self.rehold: Rehold | None = None
        self.rejoins = 0  # rejoins whose rows were taken back (a test waits on it)

    @classmethod
    async def open(
        cls,
        settings: ClusterConfig,
        data_dir: Path,
        store: Store,
        master: bytes,
        clock: Clock,
    ) -> ClusterNode:
        """`master`: the site's master key (it unwraps the shared keyring)."""
        password = settings.password(data_dir)
        extra: dict[str, Any] = {
            "application_name": f"smsgw-{settings.node_id}",
            "options": session_options(settings),
        }
        if password is not None:
            extra["password"] = password
        if "connect_timeout" not in conninfo_to_dict(settings.conninfo):
            extra["connect_timeout"] = CONNECT_TIMEOUT
        conninfo = make_conninfo(settings.conninfo, **extra)
        # One connection first: a refused or misconfigured one fails now, in one line,
        # not after the pool's retries.
        probe = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=10)
        await probe.close()
        options: dict[str, Any] = {
            "connection_class": CheckedAsyncConnection,  # a COMMIT that never ran raises
            "open": False,
            # Attempts never further apart than this once the database is away.
            "reconnect_timeout": settings.reconnect_max_delay,
            "reconnect_failed": restart_attempts,
        }
        pool = GuardedPool(  # the seal guard's refusal raised as `KeyRetired`
            conninfo,
            min_size=2,
            max_size=settings.pool_size,
            node_id=settings.node_id,
            request_timeout=settings.request_timeout,  # background work keeps 30 s
            **options,
        )
        # Connections kept for critical accepts (`critical_lane.py`).
        lane = critical_lane.lane_pool(conninfo, pool, settings.node_id, **options)
        await pool.open(wait=True, timeout=30)
        try:
            await lane.open(wait=True, timeout=30)
            async with pool.connection() as conn:
                await migrate(conn)
                for account in settings.accounts:  # the carriers' contracts
                    await buckets.configure(
                        conn, account.name, account.rate, account.burst, account.reserve()
                    )
                merged = await merge_migrated(conn)  # SQLite's standing, once
            if merged:
                log.info("consent_merged", rows=merged)
            local = await store.reader.all(
                "SELECT purpose, generation, wrapped, created_at FROM keyring"
            )
            keys = await shared_keys(pool, master, local)
            assert store.cipher is not None, "the store is open"
            check_same(keys, store.cipher, store.master_key)
            cipher = crypto.FieldCipher(keys.field, keys.blind)
            journal = OutcomeJournal(store)
            if await journal.load():
                await _replay_at_open(journal, pool)
            node: ClusterNode | None = None

            def recovered(found: list[Recovered]) -> None:
                if node is not None:
                    node._recovered(found)

            async def rejoined() -> None:
                if node is not None:
                    await node._rejoined()

            membership = Membership(
                pool,
                settings.node_id,
                clock,
                lease=settings.lease_seconds,
                margin=settings.margin_seconds,
                interval=settings.heartbeat_seconds,
                on_recovered=recovered,
                before_sweep=lambda: queue.replay_journal(),
                on_rejoined=rejoined,
                on_unreachable=pool.lost,  # requests answer 503 at once until it is back
            )
            queue = ClusterQueue(pool, cipher, lambda: membership.me)
            queue.journal = journal
            queue.master_key = store.master_key
            watch = KeyringWatch(pool, master, cipher, lambda: membership.me)
            queue.keys = pool.keys = lane.keys = watch
            queue.lane = lane
            shipper = AuditShipper(pool, store.reader, settings.node_id, audit_key(keys.root))
            node = cls(settings, conninfo, pool, membership, queue, clock, watch, shipper, store)
            queue.on_requeued = node.wake_peers
            await node.tokens.copy_local(store.reader)  # before the first request
            await node.panel.copy_local_once(store.reader, settings.node_id, clock.time())
            await membership.start()
        except BaseException:
            await lane.close()
            await pool.close()
            raise
        return node

    def outbox(self) -> ClusterOutbox:
        """The shared outbox for this node's consumers (webhooks, MQTT)."""
        lanes = LaneLocks(self._conninfo, self._clock, lambda: self.fenced)
        return ClusterOutbox(
            self._pool, self.settings.node_id, self._clock, lanes, self.queue.decrypt, self._store
        )

    def hl7_lanes(self) -> LaneLocks:
        """Which node sends each HL7 outbound interface's rows (`gateway/hl7/lane.py`)."""
        return LaneLocks(self._conninfo, self._clock, lambda: self.fenced)

    @property
    def pool(self) -> Pool:
        return self._pool

    @property
    def breaker(self) -> Breaker:
        """Whether requests wait for the database or answer 503 at once (`db_breaker`)."""
        return self._pool.breaker

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
            "key_generation": self.queue.cipher.generation,
            **self.horizon.describe(),
        }

    def start(self, adopt: Adopt) -> None:
        """Adopt recovered and unclaimed rows into this node's scheduler (`adopt(source,
        older than)` returns how many it took) on NOTIFY, and by polling behind it."""
        self._tasks.append(asyncio.create_task(self._adopting(adopt), name="cluster-adopt"))
        self._tasks.append(asyncio.create_task(self._upkeep(), name="cluster-upkeep"))
        self._tasks.append(asyncio.create_task(self._publishing(), name="cluster-routes"))
        self._tasks.append(asyncio.create_task(self.horizon.run(), name="cluster-xmin"))

    async def _upkeep(self) -> None:
        """Each heartbeat: take up a key rotation, copy new audit entries; an anchor
        every `audit_anchor_seconds`; old incarnations pruned every hour at most."""
        next_anchor = next_prune = self._clock.monotonic()
        copying = True
        while True:
            try:
                await self.keys.check(heartbeat=True)
                await self.tokens.copy_local(self._store.reader)  # the console's tokens
                if copying and (copied := await self.shipper.ship()):
                    log.info("audit_copied", node=self.settings.node_id, entries=copied)
                if self._clock.monotonic() >= next_anchor:
                    await self.shipper.anchor(self._clock.time())
                    next_anchor = self._clock.monotonic() + self.settings.audit_anchor_seconds
                if self._clock.monotonic() >= next_prune:
                    next_prune = self._clock.monotonic() + min(
                        PRUNE_EVERY, self.settings.prune_nodes_after_seconds
                    )
                    await self._prune()
            except ChainDiverged as e:  # an operator's matter: keep the rest running
                log.error("audit_chain_diverged", node=self.settings.node_id, error=str(e))
                copying = False
            except Exception as e:  # the database is away: the next round retries
                log.warning("cluster_upkeep_failed", error=exception_summary(e))
            await self._clock.sleep(self.settings.heartbeat_seconds)

    async def _prune(self) -> None:
        async with self._pool.connection() as conn:
            pruned = await prune_gone(conn, self.settings.prune_nodes_after_seconds)
        if pruned:
            log.info("nodes_pruned", node=self.settings.node_id, incarnations=pruned)

    async def _publishing(self) -> None:
        """Every heartbeat: this node's routes and their health, for the cluster view."""
        while True:
            try:
                async with self._pool.connection() as conn:
                    await publish_routes(conn, self.membership.me, self.route_health())
            except Exception as e:  # the database is away, or we are fenced: next beat
                log.warning("routes_publish_failed", error=exception_summary(e))
            await self._clock.sleep(self.settings.heartbeat_seconds)

    async def status(self) -> list[NodeView]:
        """Every node of the cluster, as `/api/v1/cluster` and the panel show it."""
        async with self._pool.connection() as conn:
            return await cluster_status(conn)

    async def _adopting(self, adopt: Adopt) -> None:
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
                    taken = await adopt(self.adoption, older_than)
                except Exception as e:  # the database is away: the next round retries
                    log.warning("adopt_failed", error=exception_summary(e))
                    continue
                if taken:
                    self.adopted += taken
                    log.info("queue_adopted", node=self.settings.node_id, count=taken)
        finally:
            await self._waker.stop()

    def nudge(self, message_id: str, urgent: bool = False) -> None:
        """A message was accepted here that only other nodes may send: this node gives
        up holding it, and they take it in now, not at their next poll (`urgent`, a
        critical one: without the NOTIFY's debounce)."""
        self._given_up.append(message_id)
        self._urgent_given_up |= urgent
        if self._giving_up is None:
            self._giving_up = asyncio.create_task(self._give_up(), name="cluster-give-up")

    async def _give_up(self) -> None:
        try:
            while self._given_up:
                ids, self._given_up = self._given_up, []
                urgent, self._urgent_given_up = self._urgent_given_up, False
                try:
                    await self.adoption.give_up(ids)
                except Exception as e:  # still held by a live node: the next poll's
                    log.warning("adopt_release_failed", error=exception_summary(e))
                self._notifier.due(RECOVERED, urgent=urgent)
        finally:
            self._giving_up = None

    def wake_peers(self) -> None:
        """Rows nobody holds were queued again (a replayed journal's retries): every
        node's adoption takes them in now, not at its next poll."""
        self._notifier.due(RECOVERED)

    async def _rejoined(self) -> None:
        """Registered anew after a lost lease: the scheduler keeps the rows still ours,
        under the new incarnation, and drops those a peer adopted meanwhile."""
        if self.rehold is not None:
            dropped = await self.rehold(self.adoption)
            log.info("node_rejoined", node=self.settings.node_id, dropped=dropped)
        self.rejoins += 1

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
            (
                "smsgw_cluster_journaled_outcomes",
                "Outcomes waiting in this node's journal for the database to take them",
                lambda: float(node.queue.journal.pending if node.queue.journal else 0),
            ),
            (
                "smsgw_cluster_database_reachable",
                "0 while this node knows the shared database is away (requests answer 503"
                " store_unavailable at once), else 1",
                lambda: 0.0 if node.breaker.away else 1.0,
            ),
            (
                "smsgw_cluster_account_busy_retries",
                "Round claims' takes on a carrier account tried again since this node"
                " started: the account's row was held past the take's short wait",
                lambda: float(node.queue.takes.busy_retries),
            ),
            (
                "smsgw_cluster_account_settles_owed",
                "Settles on a carrier account that found a row held since this node"
                " started (their give-back went with the account's next settle)",
                lambda: float(node.queue.takes.settles_owed),
            ),
            (
                "smsgw_cluster_xmin_age_seconds",
                "Age of the oldest transaction holding the database's xmin horizon (-1: unknown)",
                lambda: -1.0 if node.horizon.last is None else node.horizon.last.seconds,
            ),
        ]
        for name, doc, read in series:
            Gauge(name, doc, ["node"], registry=registry).labels(
                self.settings.node_id
            ).set_function(read)
        claims = Histogram(
            "smsgw_cluster_claim_seconds",
            "Seconds a claim's transaction on the shared queue took, waiting for a"
            " connection and the account's bucket included",
            ["node"],
            buckets=CLAIM_BUCKETS,
            registry=registry,
        )
        self.queue.claim_observer = claims.labels(self.settings.node_id).observe

    async def stop(self) -> None:
        """Stop adopting and beating, and end the lease now: peers take back at once
        whatever is still `sending` here."""
        tasks = [*self._tasks, *([self._giving_up] if self._giving_up else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._notifier.aclose()
        try:  # the audit entries of the last moments, before the pool goes
            await self.shipper.ship()
        except Exception as e:
            log.warning("audit_copy_failed", error=exception_summary(e))
        for rate in self.shared_rates:
            await rate.aclose()
        try:
            await self.membership.stop(release=True)
        finally:
            await asyncio.to_thread(self.clinical_threads.close)
            if self.queue.lane is not None:
                await self.queue.lane.close()
            await self._pool.close()


async def open_cluster(config: Config, store: Store, clock: Clock, master: bytes) -> ClusterNode:
    """This node of `[cluster]`, under the shared keyring (`master` unwraps it)."""
    try:
        return await ClusterNode.open(config.cluster, Path(config.data_dir), store, master, clock)
    except (KeyringMismatch, crypto.MasterKeyError) as e:
        raise StartupFault(f"cluster keyring: {e}") from None
    except ValueError as e:  # a password file or credential that cannot be read
        raise ConfigError(str(e)) from None
    except (psycopg.Error, PoolTimeout, OSError) as e:  # libpq's text names no password
        raise StartupFault(
            f"cluster.conninfo: cannot reach PostgreSQL ({exception_summary(e)})"
        ) from None


async def _replay_at_open(journal: OutcomeJournal, pool: Pool) -> None:
    """A previous run's journal, finished under the incarnations that claimed its rows
    (before this one registers and sweeps them back); if the database fails now, the
    heartbeats try again."""
    try:
        done = await journal.replay(pool)
    except (psycopg.Error, PoolTimeout, OSError) as e:
        log.warning("outcome_journal_replay_failed", error=exception_summary(e))
        return
    log.info(
        "outcome_journal_replayed", applied=done.applied, late=done.late, requeued=done.requeued
    )
