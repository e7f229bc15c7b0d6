"""The gateway's state as Prometheus reads it at each scrape.

`refresh(gw)` gathers a `Snapshot` (routes, queue, outbox, HL7 feeds, disk, store) —
the only async part, for the outbox's last event and the HL7 counts — and hands it to
the `StateCollector` registered in the gateway's registry, which turns it into metric
families when `generate_latest` asks. Built fresh each scrape, so a series is never
left over from a route or consumer that is gone. Cumulative numbers a part keeps
(driver counters, outbox deliveries, store commit failures) are exposed as counters.

The audit chain is checked apart (`watch_audit`, at start and hourly): a walk of the
whole chain is too long for a scrape.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from drivers.base import RouteState
from gateway.logs import exception_summary

if TYPE_CHECKING:
    from drivers.clock import Clock
    from gateway.app import Gateway
    from gateway.metrics import Metrics
    from gateway.store.audit_log import AuditTrail

log = structlog.get_logger("smsgw.metrics")

AUDIT_CHECK_INTERVAL = 3600.0
ROUTE_STATES = (*(s.value for s in RouteState), "paused")
# A bank member's state (drivers/modem/bank.py): the modem's own, or drained/parked.
MODEM_STATES = (
    "starting",
    "ready",
    "no_network",
    "unplugged",
    "resetting",
    "sim_error",
    "closed",
    "drained",
    "parked",
)
QUEUE_STATES = ("queued", "scheduled", "sending")


@dataclass(frozen=True, slots=True)
class RouteView:
    name: str
    state: str  # a RouteState value, or "paused" (an operator's)
    counters: dict[str, int]
    modems: dict[str, str]  # member name -> its state
    rate: float | None = None  # what the route sends at now; None: no limit
    discovered_rate: float | None = None  # the rate the carrier's throttling showed


@dataclass(frozen=True, slots=True)
class LaneView:
    consumer: str
    backlog: int  # events committed and not yet finished (delivered or dead)
    held: int  # messages whose events wait on a failed delivery's retries
    delivered: int
    dead: int


@dataclass(slots=True)
class Snapshot:
    routes: list[RouteView] = field(default_factory=list)
    queue: dict[str, dict[str, int]] = field(default_factory=dict)  # state -> class -> n
    oldest: dict[str, float] = field(default_factory=dict)  # class -> seconds overdue
    lanes: list[LaneView] = field(default_factory=list)
    hl7: list[tuple[str, str, dict[str, int]]] = field(default_factory=list)
    disk: tuple[int, int] | None = None  # free, size of the data volume
    store_files: dict[str, int] = field(default_factory=dict)  # db, wal -> bytes
    commit_failures: int = 0
    failing: bool = False  # the store cannot write (disk full or failing)


class StateCollector(Collector):
    """Yields the last `Snapshot` as metric families (see the module docstring)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        if s is None:
            return
        yield from _routes(s.routes)
        depth = GaugeMetricFamily(
            "smsgw_queue_messages",
            "Messages in the queue per class and state (queued: due; scheduled: not yet"
            " due; sending: at a route now)",
            labels=["priority", "state"],
        )
        for state, per_class in s.queue.items():
            for priority, n in per_class.items():
                depth.add_metric([priority, state], n)
        yield depth
        oldest = GaugeMetricFamily(
            "smsgw_queue_oldest_seconds",
            "How long the oldest due message of each class has waited since it fell due",
            labels=["priority"],
        )
        for priority, age in s.oldest.items():
            oldest.add_metric([priority], age)
        yield oldest
        yield from _lanes(s.lanes)
        hl7 = GaugeMetricFamily(
            "smsgw_hl7_messages",
            "HL7 messages kept per feed, direction and state (inbound: mapped, ignored,"
            " quarantined, rejected, duplicate; outbound write-back: pending, acked, parked...)",
            labels=["interface", "direction", "state"],
        )
        for name, direction, counts in s.hl7:
            for state, n in counts.items():
                hl7.add_metric([name, direction, state], n)
        yield hl7
        if s.disk is not None:
            yield GaugeMetricFamily(
                "smsgw_data_volume_free_bytes",
                "Bytes free for smsgw on the data directory's filesystem",
                value=s.disk[0],
            )
            yield GaugeMetricFamily(
                "smsgw_data_volume_size_bytes",
                "Size of the data directory's filesystem",
                value=s.disk[1],
            )
        files = GaugeMetricFamily(
            "smsgw_store_bytes", "Size of the store's files (db, wal)", labels=["file"]
        )
        for name, size in s.store_files.items():
            files.add_metric([name], size)
        yield files
        yield CounterMetricFamily(
            "smsgw_store_commit_failures",
            "Store transactions that failed to commit (disk full, I/O error)",
            value=s.commit_failures,
        )
        yield GaugeMetricFamily(
            "smsgw_store_writable",
            "0 while the store cannot write (disk full or failing, as /healthz says), else 1",
            value=0 if s.failing else 1,
        )


def _routes(routes: list[RouteView]) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "smsgw_route_up",
        "1 while a route can send (SMPP: bound; modems: one ready) and is not paused",
        labels=["route"],
    )
    state = GaugeMetricFamily(
        "smsgw_route_state",
        "1 for the route's current state: starting, up (every SMPP bind bound, every"
        " modem ready), degraded (some), down, parked (credentials or SIMs refused), paused",
        labels=["route", "state"],
    )
    events = CounterMetricFamily(
        "smsgw_route_events",
        "What a route's driver counted since start (submitted, rejected, throttled,"
        " receipts, inbound, reconnects, failovers ...)",
        labels=["route", "event"],
    )
    modem = GaugeMetricFamily(
        "smsgw_modem_state",
        "1 for a bank modem's current state (sim_error: its SIM needs an operator)",
        labels=["route", "modem", "state"],
    )
    rate = GaugeMetricFamily(
        "smsgw_route_rate",
        "Messages a second a route sends at now: its configured rate, or lower (or, with"
        " none configured, the one found) after the carrier throttled it; absent if unlimited",
        labels=["route"],
    )
    discovered = GaugeMetricFamily(
        "smsgw_route_discovered_rate",
        "The carrier's rate as its last throttling showed it (what it accepted over a"
        " second, less 5%); absent until the carrier throttles the route",
        labels=["route"],
    )
    for r in routes:
        if r.rate is not None:
            rate.add_metric([r.name], r.rate)
        if r.discovered_rate is not None:
            discovered.add_metric([r.name], r.discovered_rate)
        up.add_metric([r.name], 1 if r.state in (RouteState.UP, RouteState.DEGRADED) else 0)
        for name in ROUTE_STATES:
            state.add_metric([r.name, name], 1 if r.state == name else 0)
        for event, n in sorted(r.counters.items()):
            events.add_metric([r.name, event], n)
        for member, current in r.modems.items():
            for name in MODEM_STATES:
                modem.add_metric([r.name, member, name], 1 if current == name else 0)
    yield from (up, state, events, modem, rate, discovered)


def _lanes(lanes: list[LaneView]) -> Iterator[Metric]:
    backlog = GaugeMetricFamily(
        "smsgw_outbox_backlog",
        "Events committed and not yet delivered (or dead), per consumer (webhook, mqtt)",
        labels=["consumer"],
    )
    held = GaugeMetricFamily(
        "smsgw_outbox_held",
        "Messages whose events wait behind a failed delivery's retries, per consumer",
        labels=["consumer"],
    )
    delivered = CounterMetricFamily(
        "smsgw_outbox_delivered", "Events delivered since start", labels=["consumer"]
    )
    dead = CounterMetricFamily(
        "smsgw_outbox_dead_letters",
        "Events given up on since start (retry_for passed)",
        labels=["consumer"],
    )
    for lane in lanes:
        backlog.add_metric([lane.consumer], lane.backlog)
        held.add_metric([lane.consumer], lane.held)
        delivered.add_metric([lane.consumer], lane.delivered)
        dead.add_metric([lane.consumer], lane.dead)
    yield from (backlog, held, delivered, dead)


async def refresh(gw: Gateway) -> None:
    """Read the gateway's state into its collector (the `/metrics` handler, each scrape)."""
    s = Snapshot()
    for route in gw.routes.values():
        h = route.health()
        modems = {name: str(m.get("state", "")) for name, m in h.members.items()}
        if h.members:
            gw.metrics.observe_members(route.name, h.members)
        state = "paused" if route.paused else h.state.value
        s.routes.append(
            RouteView(
                route.name,
                state,
                dict(h.counters),
                modems,
                route.bucket.rate,
                route.discovered_rate,
            )
        )
    now = gw.clock.time()
    if gw.cluster is not None:  # the shared queue, the same on every node
        q = await gw.usecases.status.queue()
        s.queue = {
            kind: {c.name: getattr(c, kind) for c in q.classes}
            for kind in ("queued", "scheduled", "sending")
        }
    else:
        s.queue = {**gw.scheduler.depths(), "sending": gw.scheduler.sending_by_class()}
    for label, n in s.queue["queued"].items():
        gw.metrics.queue_depth.labels(label).set(n)
    s.oldest = gw.scheduler.oldest_waiting(now)
    last_seq = await gw.outbox.repo.last_seq()
    s.lanes = [LaneView(*lane) for lane in gw.outbox.lanes_state(last_seq)]
    if gw.hl7 is not None and gw.config.hl7.interfaces:
        s.hl7 = [(i.name, i.direction, i.counters) for i in await gw.hl7.interfaces()]
    s.disk = _disk(gw.config.data_dir)
    s.store_files = _store_files(gw.config.db_path)
    writer = gw.store.writer
    s.commit_failures, s.failing = writer.failed_batches, writer.failure is not None
    gw.metrics.state.snapshot = s


def _disk(path: str | Path) -> tuple[int, int] | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def _store_files(db: Path) -> dict[str, int]:
    sizes = {}
    for name, path in (("db", db), ("wal", db.with_name(db.name + "-wal"))):
        try:
            sizes[name] = path.stat().st_size
        except OSError:
            sizes[name] = 0
    return sizes


async def check_audit(trail: AuditTrail, metrics: Metrics, clock: Clock) -> bool:
    """Walk the audit chain once (in a worker thread) and set `smsgw_audit_chain_*`;
    True if it is intact."""
    result = await trail.verify_apart()
    metrics.audit_chain_ok.set(1 if result.ok else 0)
    metrics.audit_verified_at.set(clock.time())
    metrics.audit_entries.set(result.entries)
    if not result.ok:
        log.error("audit_chain_broken", first_bad_seq=result.first_bad_seq, reason=result.reason)
    else:
        log.debug("audit_chain_checked", entries=result.entries)
    return result.ok


async def watch_audit(trail: AuditTrail, metrics: Metrics, clock: Clock) -> None:
    """Check the chain at start, then every AUDIT_CHECK_INTERVAL seconds."""
    while True:
        try:
            await check_audit(trail, metrics, clock)
        except Exception as e:  # the store is struggling: the next check tries again
            log.error("audit_check_failed", error=exception_summary(e))
        await clock.sleep(AUDIT_CHECK_INTERVAL)
