"""Composition root: builds the gateway from a `Config` and stops it in order.

Shutdown order (each step waits for the one before):
1. the API answers 503 to new sends (reads keep working); the HL7 listeners close;
2. the scheduler stops claiming;
3. in-flight submits get `http.shutdown_grace` seconds to finish; the rest are cut
   off and re-queued as possible duplicates;
4. drivers close (SMPP unbind, serial ports released);
5. the outbox's lanes get `outbox.shutdown_grace` seconds to deliver what is pending,
   then stop (what they had not delivered stays in the store, sent after restart);
6. the MQTT connection closes; the HTTP server stops;
7. the store checkpoints its WAL and closes.

Each step is bounded and one that fails is logged and passed over, so the store always
closes (`gateway/shutdown.py`).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import structlog

from drivers.base import DriverError
from drivers.clock import Clock, SystemClock
from drivers.credentials import SecretError
from drivers.registry import load_driver
from gateway import metrics_state
from gateway.clinical.commands import ClinicalHooks
from gateway.clinical.profile import InterfaceProfile
from gateway.clinical.rendering import Renderer
from gateway.config import Config
from gateway.consent.inbound import InboundConsent
from gateway.demo import DemoPeers
from gateway.hl7.service import Hl7Service
from gateway.hl7.settings import Hl7Config
from gateway.intake import Intake
from gateway.integrations.outbox import Outbox
from gateway.integrations.outbox_wiring import build_outbox
from gateway.logs import exception_summary
from gateway.metrics import Metrics
from gateway.models import Priority
from gateway.ratelimit import TokenBucket
from gateway.replies.inbound import InboundReplies
from gateway.router import Router, RouteRule
from gateway.routes import RouteRuntime
from gateway.scheduler import Scheduler
from gateway.shutdown import STEP_LIMIT, StopSteps
from gateway.sink import GatewaySink
from gateway.startup import StartupFault
from gateway.store import crypto
from gateway.store.audit_log import AuditTrail, audit_key
from gateway.store.queue_store import QueueStore
from gateway.store.store import Store
from gateway.tokens import TokenCache
from gateway.usage import unit_usage
from gateway.usecases_wiring import UseCaseWiring
from gateway.web.connections import HTTP_SHUTDOWN_TIMEOUT

if TYPE_CHECKING:
    from gateway.cluster.node import ClusterNode
    from gateway.directory.service import Directory
    from gateway.integrations.mqtt import MqttLink
    from gateway.start_stages import StartStages

log = structlog.get_logger("smsgw.app")

HOUSEKEEPING_INTERVAL = 3600.0
STORE_PROBE_INTERVAL = 5.0  # while commits fail (disk full): how often to try one
STORE_CLOSE_LIMIT = 15.0  # the WAL checkpoint of a busy store takes a few seconds
INBOUND_EXPIRY_MIN_SLEEP = 0.05
INBOUND_EXPIRY_RETRY = 60.0


@dataclass
class Gateway(UseCaseWiring):
    """The running gateway: its parts, their start and their ordered stop; the use
    cases built on them are `UseCaseWiring`'s (gateway/usecases_wiring.py)."""

    config: Config
    clock: Clock
    store: Store
    metrics: Metrics
    routes: dict[str, RouteRuntime]
    router: Router
    scheduler: Scheduler
    intake: Intake
    tokens: TokenCache
    sink: GatewaySink
    audit: AuditTrail
    outbox: Outbox  # register more consumers (`outbox.register(c)`) before `start()`
    accepting: bool = True
    stopped: bool = False
    demo: DemoPeers | None = None  # the embedded default's simulated peers
    mqtt: MqttLink | None = None  # [mqtt] enabled: the broker connection
    # What the clinical parts do when an appointment changes (the reminder planner).
    clinical_hooks: ClinicalHooks = field(default_factory=ClinicalHooks)
    hl7: Hl7Service | None = None  # [hl7] feeds: listeners and write-back lanes (at start)
    # Renders clinical notices (`gateway.templates`); set before `start()`: without
    # one the notice runner does not run and notices wait, pending.
    renderer: Renderer | None = None
    notice_bell: threading.Event = field(default_factory=threading.Event)  # planner -> runner
    # Interface profiles by name (`[[hl7.interfaces]]`): replies write back per these.
    clinical_profiles: dict[str, InterfaceProfile] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _ready_first: bool = False  # `start(ready_first=True)`: `after_ready()` has work
    # [cluster] enabled: this node's membership and the shared queue.
    cluster: ClusterNode | None = None

    @classmethod
    async def open(
        cls, config: Config, clock: Clock | None = None, master_key: bytes | None = None
    ) -> Gateway:
        """Open the store and build every part; nothing is sent until `start()`.
        `master_key`: as unlocked at start (gateway/custody.py), else read from its file."""
        clock = clock or SystemClock()
        key = (
            master_key if master_key is not None else crypto.read_master_key(config.master_key_path)
        )
        store = Store(
            config.db_path,
            key,
            synchronous=config.store.synchronous,
            group_commit_max=config.store.group_commit_max,
            lazy_delay=config.store.lazy_commit_ms / 1000,
        )
        await store.open()
        node = None
        try:
            if config.cluster.enabled:  # here: psycopg is an optional extra
                from gateway.cluster.node import open_cluster

                node = await open_cluster(config, store, clock, key)
            return cls._build(config, clock, store, key, node)
        except BaseException:
            if node is not None:
                await node.stop()
            await store.close()  # its writer thread would keep the process alive
            raise

    @classmethod
    def _build(
        cls, config: Config, clock: Clock, store: Store, key: bytes, node: ClusterNode | None
    ) -> Gateway:
        metrics = Metrics()
        queue: QueueStore = store if node is None else node.queue
        sink = GatewaySink(
            store,
            clock,
            metrics,
            config.inbound.reassembly_timeout,
            receipts=queue,
            inbound=None if node is None else node.inbound,
            in_doubt_seconds=config.inbound.in_doubt_seconds,
            accounts={rc.name: rc.account for rc in config.routes if rc.account},
        )
        routes: dict[str, RouteRuntime] = {}
        rules = []
        for rc in config.routes:
            factory = load_driver(rc.type)
            driver = factory(rc.name, rc.options, sink, clock)
            routes[rc.name] = RouteRuntime(
                rc, driver, TokenBucket(rc.rate, rc.burst, clock.monotonic())
            )
            rules.append(
                RouteRule(rc.name, frozenset(Priority.parse(c) for c in rc.classes), rc.prefixes)
            )
        router = Router(rules)
        if node is not None:  # eligible nodes, bind slots, shared rates
            from gateway.cluster.route_wiring import wire_routes

            wire_routes(node, routes)
        fence = None if node is None else node.fence_check
        elsewhere = None if node is None else node.nudge
        scheduler = Scheduler(
            queue,
            routes,
            router,
            config.queue,
            clock,
            metrics,
            fence=fence,
            elsewhere=elsewhere,
            journal=None if node is None else node.queue.journal_outcomes,
            record_window=config.cluster.outcome_retry_seconds,
            staged=store if node is None else None,
        )
        sink.wake_on_health(scheduler.wake)
        intake = Intake(config, store, scheduler, router, clock, metrics, sealer=queue)
        shared_tokens = None if node is None else node.tokens
        tokens = TokenCache(store, clock, config.http.token_cache_seconds, shared_tokens)
        audit = AuditTrail(store, audit_key(store.master_key), clock)
        shared_keywords = None
        if node is not None and intake.policy.enabled:  # one consent list for the nodes
            from gateway.cluster.consent_wiring import wire_consent

            shared_keywords = wire_consent(node, config, store, router, scheduler, intake.policy)
            sink.answer_keywords(shared_keywords)
        else:
            sink.answer_keywords(InboundConsent(config, store, router, scheduler, audit))
        hooks = ClinicalHooks()
        profiles = {i.name: i.profile() for i in config.hl7.inbound()}
        outbox = build_outbox(
            config,
            store,
            clock,
            busy=lambda: scheduler.in_flight > 0,
            repo=None if node is None else node.outbox(),
            wishes=None if node is None else node.dlr_wishes,
        )
        gateway = cls(
            config,
            clock,
            store,
            metrics,
            routes,
            router,
            scheduler,
            intake,
            tokens,
            sink,
            audit,
            outbox,
            clinical_hooks=hooks,
            clinical_profiles=profiles,
            cluster=node,
        )
        if node is not None:
            node.register_metrics(metrics.registry)
        gateway.planner.install(gateway.clinical_hooks)
        if node is None:
            replies = InboundReplies(config, store, router, scheduler, hooks, profiles, audit)
        else:  # matched against the shared appointments, filed for every node
            from gateway.cluster.clinical_db import ClusterClinicalDb
            from gateway.cluster.consent_wiring import shared_withdrawal
            from gateway.cluster.replies import SharedReplies

            db = gateway.clinical_db
            assert isinstance(db, ClusterClinicalDb)
            replies = SharedReplies(
                config,
                store,
                router,
                scheduler,
                hooks,
                profiles,
                audit,
                db,
                node.queue,
                node_id=config.cluster.node_id,
                withdrawal=shared_withdrawal(node, config),
                keywords=shared_keywords,
            )
        sink.answer_replies(replies)
        sink.answer_surveys(gateway.survey_answers)  # i15-surveys (shared on a cluster)
        gateway.renderer = gateway.templates.renderer
        return gateway

    async def start(
        self, *, dispatch: bool = True, ready_first: bool = False, stages: StartStages | None = None
    ) -> None:
        """Load the queue, start the drivers and the background loops.

        With `dispatch=False` (tests) no background loop runs: the test drives the
        scheduler with `run_until_idle()` and calls `housekeeping_once()` itself.
        `ready_first` (`smsgw run`): what need not come before serving waits for
        `after_ready()`: the scheduled messages due after the next `LOAD_AHEAD` seconds
        and the audit chain's check.
        """
        self._ready_first = ready_first
        loaded = await self.scheduler.load(
            None if self.cluster is None else self.cluster.adoption, later=ready_first
        )
        log.info("queue_loaded", waiting=loaded, later_after_ready=ready_first)
        if stages is not None:
            stages.mark("queue_load")
        if self.cluster is not None:
            self.cluster.rehold = self.scheduler.rehold  # after a lost lease, on rejoining
        if self.cluster is not None and dispatch:
            self.cluster.start(self.scheduler.adopt)
        await self.templates.ensure_defaults()  # the built-in templates, at the first start
        await self.links.load()  # the named links `{link:NAME}` expands at accept
        await self.scheduler.restore_parks()  # refused credentials, still the same: no bind
        for route in self.routes.values():
            seed_usage = getattr(route.driver, "seed_usage", None)
            if callable(seed_usage):
                seed_usage(await unit_usage(self.store, route.name, self.clock.time()))
            try:
                await route.driver.start()
            except DriverError as e:
                log.error("route_start_failed", route=route.name, code=e.code)
            except SecretError as e:  # a setting, not the carrier: no retry will mend it
                raise StartupFault(f"route {route.name!r}: {e}", exit_code=2) from None
        if self.config.mqtt.enabled:
            # Imported only when configured, as the directory's: ldap3 and aiomqtt are
            # ~100 ms of a start-up's CPU (issue 16, growth).
            from gateway.integrations.mqtt import mqtt_consumer
            from gateway.integrations.mqtt_send import start_mqtt

            self.mqtt = await start_mqtt(self)
            self.outbox.register(mqtt_consumer(self.config, self.mqtt))
        await self.outbox.start(run=dispatch)
        await self._start_hl7(dispatch=dispatch)
        self._start_directory(dispatch=dispatch)
        self.medications  # noqa: B018  # the clinical commands read its settings from now on
        if dispatch:
            self._spawn(self.scheduler.run())
            self._spawn(self._housekeeping())
            self._spawn(self._store_watch())
            self._spawn(self._inbound_expiry())
            self._spawn(self.rekey.run())  # resumes a re-encryption a kill cut short
            if not ready_first:
                self._spawn(metrics_state.watch_audit(self.audit, self.metrics, self.clock))
            self._spawn(self.analytics.run())  # i15-analytics: daily sums, off the send path
            # On a cluster every node tops up the shared schedules: a serial clinical
            # job, so each dose is planned once (medication/usecase.py).
            self._spawn(self.medications.run_top_up())
            self._spawn(self.survey_timeouts.run())  # i15-surveys (the shared sessions)
            if self.renderer is not None:
                self._spawn(self.notice_runner(self.renderer).run())
            else:
                log.warning("notice_runner_off", reason="no template renderer")
            self._spawn(self.campaign_runner.run())  # i15-campaigns
        if stages is not None:
            stages.mark("routes_and_services")

    def after_ready(self, settled: Callable[[], None] = lambda: None) -> None:
        """Once the gateway serves (after `start(ready_first=True)`): read the rest of
        the scheduled messages, call `settled` (the queue is whole in memory), then
        check the audit chain (in a thread; a broken chain alerts as at any check)."""
        if not self._ready_first:
            settled()
            return
        self._spawn(self._load_later(settled))

    async def _load_later(self, settled: Callable[[], None]) -> None:
        while True:
            try:
                taken = await self.scheduler.load_later()
                break
            except Exception as e:  # the store is failing: nothing past the horizon is lost
                log.error("queue_load_later_failed", error=exception_summary(e))
                await self.clock.sleep(STORE_PROBE_INTERVAL)
        log.info("queue_loaded_later", scheduled=taken)
        settled()
        await metrics_state.watch_audit(self.audit, self.metrics, self.clock)

    async def _start_hl7(self, *, dispatch: bool) -> None:
        # On a cluster one node at a time sends each outbound interface's rows.
        leadership = None if self.cluster is None else self.cluster.hl7_lanes()
        self.hl7 = Hl7Service(
            self.config,
            self.store,
            self.clock,
            self.clinical_hooks,
            self.audit,
            self.clinical_db,
            leadership,
        )
        try:
            await self.hl7.start(dispatch=dispatch)
        except OSError as e:  # the listen address is taken or not ours
            await self.hl7.stop()
            if self.config.source is None:  # the demo feed is a nicety, not a reason to stop
                log.warning("hl7_demo_listener_unavailable", error=e.strerror or str(e))
                self.hl7 = Hl7Service(
                    msgspec.structs.replace(self.config, hl7=Hl7Config()),
                    self.store,
                    self.clock,
                    self.clinical_hooks,
                    self.audit,
                    self.clinical_db,
                    leadership,
                )
                return
            raise StartupFault(
                f"hl7.interfaces: cannot listen: {e.strerror or e}", exit_code=2
            ) from None

    @functools.cached_property
    def directory(self) -> Directory | None:
        """panel sign-in through the directory; None unless `[directory]` is on."""
        if not self.config.directory.enabled:
            return None
        from gateway.directory.build import build_directory

        return build_directory(self.config, self.clock, self.metrics.registry)

    def _start_directory(self, *, dispatch: bool) -> None:
        if not self.config.directory.enabled:
            return
        from gateway.directory.build import DirectorySetupError

        try:
            directory = self.directory
        except DirectorySetupError as e:  # a setting: no retry will mend it
            raise StartupFault(str(e), exit_code=2) from None
        if dispatch and directory is not None:
            self._spawn(directory.watch())  # health sees an outage with nobody signing in

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(coro))

    async def _housekeeping(self) -> None:
        while True:
            await self.clock.sleep(HOUSEKEEPING_INTERVAL)
            try:
                await self.housekeeping_once()
            except Exception as e:  # the store is failing (disk full): next hour, not never
                log.error("housekeeping_failed", error=exception_summary(e))

    # -- a failing store (issue 14, i14-retention) ---------------------------------------
    async def _store_watch(self) -> None:
        """While commits fail (disk full), try a small write every few seconds: the
        first that commits clears `store.failing`, and readiness, with no restart."""
        while True:
            await self.clock.sleep(STORE_PROBE_INTERVAL)
            if self.store.failing is None:
                continue
            try:
                await self.store.probe(self.clock.time())
            except Exception as e:
                log.debug("store_probe_failed", error=exception_summary(e))

    def not_ready(self) -> str | None:
        """Why no message could go out now, or None when some route can send.

        Readiness, not liveness: a gateway with every route paused still accepts and
        queues messages, but a monitor (or a load balancer) must hear that none leaves.
        Public (`/healthz`), so it names no route."""
        if not self.accepting:
            return "shutting down"
        if self.store.failing is not None:
            return f"the store cannot commit ({self.store.failing})"
        if self.cluster is not None and self.cluster.fenced:
            return "this node is fenced (its cluster lease was not renewed)"
        if not self.routes:
            return "no route configured"
        if all(r.paused for r in self.routes.values()):
            return "every route is paused"
        if not any(not r.paused and r.health().can_send for r in self.routes.values()):
            return "no route can send (paused or down)"
        return None

    async def set_route_paused(self, name: str, *, paused: bool, actor: str) -> RouteRuntime | None:
        """Pause or resume a route (API and panel alike): audited, then the scheduler
        is woken so its messages fail over or go out. None if there is no such route."""
        route = self.routes.get(name)
        if route is None:
            return None
        action = "route_paused" if paused else "route_resumed"
        if not paused and route.awaits_resume:
            action = "route_reconnected"  # parked for refused credentials: bind once more
        await self.audit.record(actor, action, "route", route.name)
        route.set_paused(paused)
        self.scheduler.wake()
        log.info(action, route=route.name, actor=actor)
        return route

    async def housekeeping_once(self) -> None:
        cutoff = self.clock.time() - self.config.store.idempotency_hours * 3600
        removed = await self.store.prune_idempotency(cutoff)
        if self.cluster is not None:  # the shared answers (any node prunes)
            removed += await self.cluster.queue.prune_idempotency(cutoff)
        await self.sink.expire_inbound()
        now, admin = self.clock.time(), self.config.admin
        sessions = await self.admin_repo.prune(
            idle_before=now - admin.idle_timeout,
            created_before=now - admin.absolute_lifetime,
            failed_before=now - admin.lockout_minutes * 60,
        )
        await self.audit.close_repeats()  # failed sign-ins counted in windows now over
        await self.links.prune()  # expired short links' tokens
        if self.config.retention.enabled:
            await self.retention.run("gateway", audit_empty=False)
        log.info("housekeeping", idempotency_keys_removed=removed, sessions_removed=sessions)

    async def _inbound_expiry(self) -> None:
        """Store incomplete inbound sets as they fall due: a part arriving while this
        sleeps is due later than whatever this sleeps until."""
        timeout = self.config.inbound.reassembly_timeout
        while True:
            try:
                next_due = await self.sink.expire_inbound()
            except Exception as e:  # the store is struggling: try again, not never
                log.error("inbound_expiry_failed", error=exception_summary(e))
                next_due = self.clock.time() + min(timeout, INBOUND_EXPIRY_RETRY)
            delay = timeout if next_due is None else next_due - self.clock.time()
            await self.clock.sleep(max(delay, INBOUND_EXPIRY_MIN_SLEEP))

    async def stop(
        self,
        *,
        before_store_close: Callable[[], Awaitable[None]] | None = None,
        on_step: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Stop in the documented order; `before_store_close` stops the HTTP server.

        Each step is bounded and a failing one is logged, never raised, so the store
        closes whatever happened before it (`gateway/shutdown.py` says why). Returns
        the steps that failed or overran; `on_step` hears each step's name as it starts.
        """
        if self.stopped:
            return []
        self.stopped = True
        self.accepting = False
        steps = StopSteps(on_step)
        if self.hl7 is not None:  # no new HL7 message is taken in from here
            await steps.run("hl7", self.hl7.stop)
        self.scheduler.stop_claiming()
        grace = self.config.http.shutdown_grace
        await steps.run(
            "in-flight submits", lambda: self._drain_in_flight(grace), grace + STEP_LIMIT
        )
        for route in self.routes.values():
            await steps.run(f"route {route.name}", route.driver.aclose)
        await steps.run("background loops", self._cancel_tasks)
        # The marks of inbound answered, cleared: else a restart takes them for in doubt.
        await steps.run("inbound marks", self.sink.aclose)
        outbox_grace = self.config.outbox.shutdown_grace
        await steps.run(  # MQTT still up for it
            "outbox", lambda: self.outbox.stop(outbox_grace), outbox_grace + STEP_LIMIT
        )
        if self.mqtt is not None:
            await steps.run("mqtt", self.mqtt.aclose)
        if before_store_close is not None:
            await steps.run("http server", before_store_close, HTTP_SHUTDOWN_TIMEOUT + STEP_LIMIT)
        if self.cluster is not None:  # after the drain: the lease ends, peers take the rest
            await steps.run("cluster", self.cluster.stop)
        await steps.run("store", self.store.close, STORE_CLOSE_LIMIT)
        if steps.failed:
            log.error("stopped_incompletely", failed=steps.failed)
        else:
            log.info("stopped")
        return steps.failed

    async def _drain_in_flight(self, grace: float) -> None:
        cut = await self.scheduler.drain(grace)
        if cut:
            log.warning("shutdown_cut_in_flight", count=cut)

    async def _cancel_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
