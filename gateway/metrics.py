"""Prometheus metrics. Labels are route names, classes, states and error codes only:
never a number, a body or anything a client typed.

Two kinds: instruments fed as events happen (counters, histograms, a few gauges set on
a change), and the state read at each scrape (routes, queue, outbox, disk, store,
audit chain) by the collector in `gateway/metrics_state.py`. Process metrics
(`process_*`) come from prometheus_client's own collector."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)

from gateway import __version__
from gateway.metrics_loop import (
    LabelledLoopHistogram,
    LoopCounter,
    LoopGaugeValue,
    LoopHistogram,
    LoopHistogramSeries,
)
from gateway.metrics_state import StateCollector
from gateway.models import Priority

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(frozen=True, slots=True)
class RouteMetrics:
    """One route's labelled series, looked up once rather than on every submit."""

    in_flight: LoopGaugeValue  # moved on the event loop only
    sends: Mapping[str, Counter]  # by outcome: sent, failed, retry
    submit_latency: LoopHistogramSeries  # observed on the event loop only


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client
        self.registry = CollectorRegistry()
        r = self.registry
        # Bumped once per accept, on the event loop: `accepted.counts[priority] += n`.
        self.accepted = LoopCounter(
            "smsgw_messages_accepted",
            "Messages accepted by the API",
            "priority",
            {p: p.label for p in Priority},
            r,
        )
        self.rejected = Counter(
            "smsgw_api_rejections", "API requests refused, by error code", ["code"], registry=r
        )
        self.sends = Counter(
            "smsgw_sends", "Submit outcomes per route", ["route", "outcome"], registry=r
        )
        self.final = Counter(
            "smsgw_messages_final", "Messages reaching a final state", ["state"], registry=r
        )
        self.queue_depth = Gauge(
            "smsgw_queue_depth", "Messages waiting, per class", ["priority"], registry=r
        )
        self.in_flight = Gauge(
            "smsgw_route_in_flight", "Submits in flight per route", ["route"], registry=r
        )
        self.possible_duplicates = Counter(
            "smsgw_possible_duplicates",
            "Messages re-queued after they may have been sent",
            ["reason"],
            registry=r,
        )
        self.receipts_overdue = Counter(
            "smsgw_receipts_overdue",
            "Sent messages whose receipt did not come within [queue] receipt_deadline",
            ["route"],
            registry=r,
        )
        self.route_auth_failed = Gauge(
            "smsgw_route_auth_failed",
            "1 while a route is parked because the carrier refused its credentials",
            ["route"],
            registry=r,
        )
        self.route_auth_refusals = Counter(
            "smsgw_route_auth_refusals",
            "Times a carrier refused a route's credentials (each parks the route)",
            ["route"],
            registry=r,
        )
        self.accept_latency = LoopHistogram(
            "smsgw_accept_seconds",
            "HTTP accept time, request to durable commit",
            _LATENCY_BUCKETS,
            r,
        )
        # Observed once per dispatched message, on the event loop (the scheduler, the
        # group sender): plain counts, not prometheus_client's locked walk of buckets.
        self.queue_latency = LabelledLoopHistogram(
            "smsgw_queue_seconds",
            "Time from due to sending, per class",
            "priority",
            _LATENCY_BUCKETS,
            r,
        )
        self.submit_latency = LabelledLoopHistogram(
            "smsgw_submit_seconds",
            "Driver submit time per route",
            "route",
            _LATENCY_BUCKETS,
            r,
        )
        self.queue_latency_by_class = {p: self.queue_latency.labels(p.label) for p in Priority}
        self._routes: dict[str, RouteMetrics] = {}
        modem = ["route", "modem"]
        self.modem_ready = Gauge(
            "smsgw_modem_ready", "1 when a bank's modem can take work", modem, registry=r
        )
        self.modem_signal = Gauge(
            "smsgw_modem_signal_rssi", "Modem signal, RSSI 0-31 (AT+CSQ)", modem, registry=r
        )
        self.modem_registered = Gauge(
            "smsgw_modem_registered", "1 when the modem is registered", modem, registry=r
        )
        self.modem_sent_today = Gauge(
            "smsgw_modem_sent_today", "Parts a modem sent today", modem, registry=r
        )
        self.modem_errors = Gauge(
            "smsgw_modem_send_errors", "Failed sends per modem since start", modem, registry=r
        )
        self.inbound_undecodable = Counter(
            "smsgw_inbound_undecodable",
            "Inbound records that could not be decoded, held for an operator",
            ["route"],
            registry=r,
        )
        # i11-perf: the MQTT link (gateway/integrations/mqtt.py).
        self.mqtt_connected = Gauge(
            "smsgw_mqtt_connected", "1 while connected to the MQTT broker", registry=r
        )
        self.mqtt_published = Counter(
            "smsgw_mqtt_published", "Publishes the MQTT broker acknowledged (QoS 1)", registry=r
        )
        self.mqtt_publish_failed = Counter(
            "smsgw_mqtt_publish_failures",
            "MQTT publishes that failed, by reason code",
            ["reason"],
            registry=r,
        )
        self.mqtt_sends = Counter(
            "smsgw_mqtt_sends_received",
            "Send requests taken from the MQTT send topic, by outcome",
            ["outcome"],
            registry=r,
        )
        self.notices = Counter(
            "smsgw_clinical_notices",
            "Clinical notices leaving pending, by kind and outcome (queued, skipped:<reason>)",
            ["kind", "outcome"],
            registry=r,
        )
        # i14-monitor: what operators alert on (docs/ops/monitoring.md).
        self.inbound = Counter(
            "smsgw_inbound_messages",
            "Inbound messages stored (a multi-part one once, when its set is whole)",
            ["route"],
            registry=r,
        )
        self.route_throttled = Counter(
            "smsgw_route_throttled",
            "Submits the carrier pushed back (SMPP ESME_RTHROTTLED and the like)",
            ["route"],
            registry=r,
        )
        self.audit_chain_ok = Gauge(
            "smsgw_audit_chain_ok",
            "1 if the audit chain verified at the last check, 0 if broken (absent before one)",
            registry=r,
        )
        self.audit_verified_at = Gauge(
            "smsgw_audit_chain_verified_timestamp_seconds",
            "Unix time of the last audit chain check",
            registry=r,
        )
        self.audit_entries = Gauge(
            "smsgw_audit_chain_entries", "Entries in the audit chain at the last check", registry=r
        )
        build = Gauge("smsgw_build_info", "1; the version as a label", ["version"], registry=r)
        build.labels(__version__).set(1)
        ProcessCollector(registry=r)
        self.state = StateCollector()  # filled by `metrics_state.refresh` at each scrape
        r.register(self.state)
        # i15-links: requests to short links, by what they were taken for (a click's
        # agent class, `gone`: unknown or expired, `limited`: over the source's rate).
        self.link_requests = Counter(
            "smsgw_link_requests", "Requests to short links, by kind", ["kind"], registry=r
        )
        self.commit_batch = Histogram(
            "smsgw_commit_batch_size",
            "Items per group commit",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
            registry=r,
        )

    def route(self, name: str) -> RouteMetrics:
        found = self._routes.get(name)
        if found is None:
            in_flight = LoopGaugeValue()
            self.in_flight.labels(name).set_function(in_flight.get)
            found = self._routes[name] = RouteMetrics(
                in_flight,
                {o: self.sends.labels(name, o) for o in ("sent", "failed", "retry")},
                self.submit_latency.labels(name),
            )
        return found

    def observe_members(self, route: str, members: Mapping[str, Mapping[str, object]]) -> None:
        """Per-modem gauges from a bank's health; labels are configured names only."""
        for name, member in members.items():
            self.modem_ready.labels(route, name).set(1 if member.get("state") == "ready" else 0)
            signal = member.get("signal")
            self.modem_signal.labels(route, name).set(signal if isinstance(signal, int) else -1)
            registered = member.get("registration") in ("registered", "roaming")
            self.modem_registered.labels(route, name).set(1 if registered else 0)
            for gauge, key in (
                (self.modem_sent_today, "sent_today"),
                (self.modem_errors, "errors"),
            ):
                value = member.get(key)
                gauge.labels(route, name).set(value if isinstance(value, int) else 0)
