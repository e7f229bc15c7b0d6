"""/metrics as Prometheus scrapes it, over a real loopback socket: parsed with
prometheus_client's own text parser, each family's type checked, and values that move
as messages, receipts, inbound, webhooks, throttling and the audit chain do."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from drivers.base import InboundSms, RouteHealth, RouteState
from drivers.clock import FakeClock, SystemClock
from drivers.modem.emulator import EmulatedModem
from gateway import metrics_state
from gateway.app import Gateway
from tests import hl7_rig, http_daemon, modem_rig, webhook_rig
from tests import test_hl7_api as hl7_api
from tests import test_smpp_faults as smpp_faults
from tests.conftest import (
    CANARY_BODY,
    CANARY_DIGITS,
    CANARY_NUMBER,
    GatewayFactory,
    accept,
    loopback,
    make_config,
    settle_receipts,
)
from tests.test_api import Api, _api
from tests.test_outbox import FAST, hook
from tests.test_smpp_faults import FINAL_OK, RigFactory
from tests.webhook_rig import Receiver, write_secret

receivers = webhook_rig.receivers  # the fixtures
open_rig, sim = smpp_faults.open_rig, smpp_faults.sim

# Every family operators alert on or chart, with its type (docs/ops/monitoring.md).
EXPECTED = {
    "smsgw_route_up": "gauge",
    "smsgw_route_state": "gauge",
    "smsgw_route_events": "counter",
    "smsgw_route_throttled": "counter",
    "smsgw_queue_messages": "gauge",
    "smsgw_queue_oldest_seconds": "gauge",
    "smsgw_queue_depth": "gauge",
    "smsgw_messages_accepted": "counter",
    "smsgw_messages_final": "counter",
    "smsgw_sends": "counter",
    "smsgw_inbound_messages": "counter",
    "smsgw_outbox_backlog": "gauge",
    "smsgw_outbox_held": "gauge",
    "smsgw_outbox_delivered": "counter",
    "smsgw_outbox_dead_letters": "counter",
    "smsgw_mqtt_connected": "gauge",
    "smsgw_hl7_messages": "gauge",
    "smsgw_data_volume_free_bytes": "gauge",
    "smsgw_data_volume_size_bytes": "gauge",
    "smsgw_store_bytes": "gauge",
    "smsgw_store_commit_failures": "counter",
    "smsgw_store_writable": "gauge",
    "smsgw_audit_chain_ok": "gauge",
    "smsgw_audit_chain_verified_timestamp_seconds": "gauge",
    "smsgw_build_info": "gauge",
    "smsgw_submit_seconds": "histogram",
    "process_cpu_seconds": "counter",
    "process_resident_memory_bytes": "gauge",
    "process_open_fds": "gauge",
    "process_start_time_seconds": "gauge",
}


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.types: dict[str, str] = {}
        self.samples: list[Sample] = []
        for family in text_string_to_metric_families(text):
            assert family.name not in self.types, f"{family.name} exposed twice"
            self.types[family.name] = family.type
            self.samples += family.samples
            if family.type == "counter":
                assert all(s.name == family.name + "_total" for s in family.samples), family.name

    def value(self, name: str, **labels: str) -> float:
        found = [s.value for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) == 1, f"{name}{labels}: {len(found)} samples"
        return float(found[0])


def file_size(path: Path) -> int:
    return path.stat().st_size


async def scrape(api: Api) -> Scrape:
    resp = await api.get("/api/v1/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=")
    return Scrape(await resp.text())


@pytest.fixture
async def gw(open_gateway: GatewayFactory) -> Gateway:
    return await open_gateway()


@pytest.fixture
async def api(gw: Gateway) -> AsyncIterator[Api]:
    async for a in _api(gw, frozenset({"send", "read", "admin"})):
        yield a


async def test_every_family_has_its_type_and_counters_end_in_total(api: Api) -> None:
    await accept(api.gw, body=CANARY_BODY)
    m = await scrape(api)
    missing = {n: t for n, t in EXPECTED.items() if m.types.get(n) != t}
    assert not missing, f"absent or of another type: {missing}"
    assert m.value("process_open_fds") > 0
    assert m.value("process_resident_memory_bytes") > 0
    assert CANARY_DIGITS not in m.text and "CANARY" not in m.text


async def test_queue_per_class_and_state_and_the_oldest_wait(
    api: Api, gw: Gateway, clock: FakeClock
) -> None:
    for _ in range(2):
        await accept(gw, priority="critical")
    await accept(gw, priority="bulk")
    await accept(gw, priority="normal", send_at=datetime.fromtimestamp(clock.time() + 3600, UTC))
    m = await scrape(api)
    assert m.value("smsgw_queue_messages", priority="critical", state="queued") == 2
    assert m.value("smsgw_queue_messages", priority="bulk", state="queued") == 1
    assert m.value("smsgw_queue_messages", priority="normal", state="scheduled") == 1
    assert m.value("smsgw_queue_messages", priority="critical", state="sending") == 0
    assert m.value("smsgw_queue_oldest_seconds", priority="critical") == 0

    clock.advance(90)
    m = await scrape(api)
    assert m.value("smsgw_queue_oldest_seconds", priority="critical") == 90
    assert m.value("smsgw_queue_oldest_seconds", priority="bulk") == 90
    assert m.value("smsgw_queue_oldest_seconds", priority="high") == 0

    await gw.scheduler.run_until_idle()
    await settle_receipts(gw)
    m = await scrape(api)
    assert m.value("smsgw_queue_messages", priority="critical", state="queued") == 0
    assert m.value("smsgw_queue_oldest_seconds", priority="critical") == 0
    assert m.value("smsgw_sends_total", route="main", outcome="sent") == 3
    assert m.value("smsgw_messages_accepted_total", priority="critical") == 2
    assert m.value("smsgw_route_events_total", route="main", event="submitted") == 3


async def test_sending_counts_a_class_while_its_submit_is_at_the_route(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway([{"name": "main", "type": "loopback", "latency": 5.0}])
    async for api in _api(gw):
        await accept(gw, priority="high")
        dispatch = asyncio.create_task(gw.scheduler.run_until_idle())
        async with asyncio.timeout(5):
            await clock.wait_sleeping(1)  # the submit waits at the route
        m = await scrape(api)
        assert m.value("smsgw_queue_messages", priority="high", state="sending") == 1
        assert m.value("smsgw_queue_messages", priority="high", state="queued") == 0
        clock.advance(5)
        await dispatch
        m = await scrape(api)
        assert m.value("smsgw_queue_messages", priority="high", state="sending") == 0


async def test_route_up_and_state_follow_pause_and_link_loss(api: Api, gw: Gateway) -> None:
    m = await scrape(api)
    assert m.value("smsgw_route_up", route="main") == 1
    assert m.value("smsgw_route_state", route="main", state="up") == 1
    loopback(gw).set_down(True)
    m = await scrape(api)
    assert m.value("smsgw_route_up", route="main") == 0
    assert m.value("smsgw_route_state", route="main", state="down") == 1
    assert m.value("smsgw_route_state", route="main", state="up") == 0
    loopback(gw).set_down(False)
    await gw.set_route_paused("main", paused=True, actor="test")
    m = await scrape(api)
    assert m.value("smsgw_route_up", route="main") == 0
    assert m.value("smsgw_route_state", route="main", state="paused") == 1


async def test_inbound_messages_are_counted_per_route(api: Api, gw: Gateway) -> None:
    before = await scrape(api)
    assert "smsgw_inbound_messages_total" not in {s.name for s in before.samples}
    for _ in range(2):
        await gw.sink.inbound("main", InboundSms(sender=CANARY_NUMBER, body=CANARY_BODY))
    m = await scrape(api)
    assert m.value("smsgw_inbound_messages_total", route="main") == 2
    assert CANARY_DIGITS not in m.text


async def test_audit_chain_state_turns_to_broken_when_an_entry_is_changed(
    api: Api, gw: Gateway, clock: FakeClock
) -> None:
    await gw.audit.record("test", "route_paused", "route", "main")
    assert await metrics_state.check_audit(gw.audit, gw.metrics, clock)
    m = await scrape(api)
    assert m.value("smsgw_audit_chain_ok") == 1
    assert m.value("smsgw_audit_chain_verified_timestamp_seconds") == clock.time()
    assert m.value("smsgw_audit_chain_entries") == 1

    conn = sqlite3.connect(gw.config.db_path)
    with conn:  # what an intruder with the file would do: the triggers go first
        conn.execute("DROP TRIGGER audit_log_no_update")
        assert conn.execute("UPDATE audit_log SET action = 'x' WHERE seq = 1").rowcount == 1
    conn.close()
    clock.advance(3600)
    assert not await metrics_state.check_audit(gw.audit, gw.metrics, clock)
    m = await scrape(api)
    assert m.value("smsgw_audit_chain_ok") == 0
    assert m.value("smsgw_audit_chain_verified_timestamp_seconds") == clock.time()


async def test_disk_and_store_sizes(api: Api, gw: Gateway) -> None:
    m = await scrape(api)
    free = m.value("smsgw_data_volume_free_bytes")
    assert 0 < free <= m.value("smsgw_data_volume_size_bytes")
    assert m.value("smsgw_store_bytes", file="db") == file_size(gw.config.db_path)
    assert m.value("smsgw_store_writable") == 1
    assert m.value("smsgw_store_commit_failures_total") == 0


async def test_webhook_backlog_grows_while_undelivered_and_drains(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret)
    gw = await open_gateway(
        webhooks=[hook("rx", rx.url, path, events=["message.status"])], outbox=FAST
    )
    async for api in _api(gw):
        await accept(gw)
        await gw.scheduler.run_until_idle()  # queued -> sending -> sent: two events
        m = await scrape(api)
        assert m.value("smsgw_outbox_backlog", consumer="webhook:rx") == 2
        assert m.value("smsgw_outbox_delivered_total", consumer="webhook:rx") == 0
        await gw.outbox.run_once("webhook:rx")
        m = await scrape(api)
        assert m.value("smsgw_outbox_backlog", consumer="webhook:rx") == 0
        assert m.value("smsgw_outbox_delivered_total", consumer="webhook:rx") == 2


async def test_carrier_throttling_is_counted_on_a_real_smpp_route(open_rig: RigFactory) -> None:
    rig = await open_rig(window=1)
    rig.sim.throttle(2)
    ids = [await accept(rig.gw, body=f"t {i}") for i in range(2)]
    await rig.until(rig.all_in(ids, FINAL_OK))
    async for api in _api(rig.gw):
        m = await scrape(api)
        assert m.value("smsgw_route_throttled_total", route="carrier") == 2
        assert m.value("smsgw_route_events_total", route="carrier", event="throttled") == 2
        assert m.value("smsgw_route_up", route="carrier") == 1
        assert m.value("smsgw_route_state", route="carrier", state="up") == 1
        assert m.value("smsgw_queue_messages", priority="normal", state="sending") == 0


async def test_a_modem_whose_sim_wants_a_pin_shows_as_sim_error(tmp_path: Path) -> None:
    """A real modem bank over a pseudo-terminal: the emulated SIM asks for a PIN that
    is not configured, so the modem stops on its SIM and the route parks."""
    modem = EmulatedModem("quectel-ec25", pin="1234", **modem_rig.EMULATED)
    await modem.start()
    route = {"name": "bank", "type": "modem", "modems": [{"name": "m1", "port": modem.path}]}
    gw = await Gateway.open(make_config(tmp_path, [{**route, **modem_rig.FAST}]), SystemClock())
    changed = asyncio.Event()
    reported = gw.sink.health_changed

    def health_changed(name: str, health: RouteHealth) -> None:
        reported(name, health)
        changed.set()

    gw.sink.health_changed = health_changed  # type: ignore[method-assign]
    try:
        await gw.start(dispatch=False)
        async with asyncio.timeout(8):
            while gw.routes["bank"].health().state is not RouteState.PARKED:
                changed.clear()
                await changed.wait()
        async for api in _api(gw):
            m = await scrape(api)
            assert m.value("smsgw_modem_state", route="bank", modem="m1", state="sim_error") == 1
            assert m.value("smsgw_modem_state", route="bank", modem="m1", state="ready") == 0
            assert m.value("smsgw_route_state", route="bank", state="parked") == 1
            assert m.value("smsgw_route_up", route="bank") == 0
    finally:
        await gw.stop()
        await modem.aclose()


def test_a_real_smsgw_run_exposes_process_metrics_and_checks_its_audit_chain(
    tmp_path: Path,
) -> None:
    with http_daemon.running(tmp_path) as d:
        # The check starts with the service: its line may come before `listening`, which
        # `running` waited for (a busy machine once ordered them so).
        if '"audit_chain_checked"' not in d.stderr():
            d.wait_log(lambda e: e.get("event") == "audit_chain_checked")
        raw = http_daemon.exchange(
            d.port,
            b"GET /api/v1/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            + f"Authorization: Bearer {d.token}\r\n\r\n".encode(),
        )
        status, _, body = http_daemon.split_response(raw)
        assert status == 200
        m = Scrape(body.decode())
        assert m.value("smsgw_audit_chain_ok") == 1
        assert m.value("smsgw_audit_chain_entries") >= 1  # `smsgw init` wrote some
        started = m.value("process_start_time_seconds")
        assert abs(started - time.time()) < 120
        assert m.value("process_cpu_seconds_total") > 0
        assert m.value("smsgw_route_up", route="demo") == 1


async def test_hl7_feed_counts_move_as_messages_arrive(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(hl7=hl7_api.IFACES)
    async for api in _api(gw):
        m = await scrape(api)
        assert m.value("smsgw_hl7_messages", interface="ehr", direction="in", state="mapped") == 0
        msgs = [
            hl7_rig.message("Z01", "A"),
            hl7_rig.message("Z03", "Q"),
            hl7_rig.message("Z01", "A"),
        ]
        await hl7_api._send(api, "ehr", *msgs)
        m = await scrape(api)
        for state, n in (("mapped", 1), ("quarantined", 1), ("duplicate", 1), ("rejected", 0)):
            assert m.value("smsgw_hl7_messages", interface="ehr", direction="in", state=state) == n
        out = m.value("smsgw_hl7_messages", interface="ehr-out", direction="out", state="parked")
        assert out == 0
