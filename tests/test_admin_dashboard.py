"""The dashboard snapshot and its live hub, on a fake clock against a real store."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from drivers.clock import FakeClock
from gateway.admin.dashboard import DashboardHub, EventTail, build_snapshot
from gateway.admin.route_cards import signal_cell, unit_rows
from tests.conftest import CANARY_BODY, CANARY_DIGITS, GatewayFactory, accept, settle_receipts

ROUTES = [
    {
        "name": "main",
        "type": "loopback",
        "latency": 0.0,
        "receipt_delay": 5.0,
        "reject_prefixes": ["+1202555019"],
    },
    {"name": "spare", "type": "loopback", "latency": 0.0, "classes": ["bulk"]},
]


async def test_snapshot_counts_queue_per_class_and_route(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(ROUTES)
    await accept(gw, priority="critical")
    await accept(gw, priority="critical")
    await accept(gw, priority="bulk")
    tail = EventTail(gw.usecases.activity, gw.clock)
    await tail.refresh()
    snap = await build_snapshot(gw, tail)
    queued = {c["name"]: c["queued"] for c in snap["queue"]["classes"]}
    assert queued == {"critical": 2, "high": 0, "normal": 0, "bulk": 1}
    assert snap["queue"]["queued"] == 3
    assert snap["queue"]["oldest_age_seconds"] == 0
    routes = {r["name"]: r for r in snap["routes"]}
    assert routes["main"]["queued"] == 3  # the first route every class may take
    assert routes["spare"]["queued"] == 0
    assert routes["main"]["state"] == "up"


async def test_snapshot_counts_outcomes_failures_and_sends_per_minute(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(ROUTES)
    tail = EventTail(gw.usecases.activity, gw.clock)
    await tail.refresh()
    for _ in range(3):
        await accept(gw)
    await accept(gw, to="+12025550190")  # rejected by the route: failed with its code
    await gw.scheduler.run_until_idle()
    assert await tail.refresh()
    snap = await build_snapshot(gw, tail)
    assert snap["throughput"]["sent_last_hour"] == 3
    assert snap["outcomes"]["failed"] == 1
    assert snap["failures"] == [{"code": "loopback:reject", "count": 1}]
    assert len(snap["throughput"]["per_second"]) == 60
    assert snap["throughput"]["per_second"][-1] > 0
    clock.advance(5)
    await settle_receipts(gw)
    await tail.refresh()
    snap = await build_snapshot(gw, tail)
    assert snap["outcomes"]["delivered"] == 3
    assert snap["outcomes"]["delivered_rate"] == 0.75
    # An hour later the minute has aged out of the window.
    clock.advance(3600)
    assert await tail.refresh()
    snap = await build_snapshot(gw, tail)
    assert snap["throughput"]["sent_last_hour"] == 0
    assert snap["failures"] == []


async def test_a_new_tail_backfills_the_last_hour_only(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(ROUTES)
    await accept(gw)
    await gw.scheduler.run_until_idle()
    clock.advance(2 * 3600)
    await accept(gw)
    await accept(gw)
    await gw.scheduler.run_until_idle()
    tail = EventTail(gw.usecases.activity, gw.clock)
    await tail.refresh()
    assert tail.totals()["sent"] == 2


async def test_snapshot_holds_no_phi(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(ROUTES)
    await accept(gw, body=CANARY_BODY)
    await gw.scheduler.run_until_idle()
    tail = EventTail(gw.usecases.activity, gw.clock)
    await tail.refresh()
    text = json.dumps(await build_snapshot(gw, tail))
    assert CANARY_DIGITS not in text
    assert "CANARY" not in text


async def test_hub_pushes_a_snapshot_when_something_changes(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(ROUTES)
    hub = DashboardHub(gw, interval=0.5)
    listener = hub.subscribe()
    try:
        first = json.loads(await asyncio.wait_for(listener.get(), 5))
        assert first["queue"]["queued"] == 0
        # Nothing changed: the next poll pushes nothing.
        await clock.wait_sleeping(1)
        clock.advance(0.5)
        await clock.wait_sleeping(1)
        assert listener.empty()
        await accept(gw, priority="high")
        clock.advance(0.5)
        pushed = json.loads(await asyncio.wait_for(listener.get(), 5))
        assert pushed["queue"]["queued"] == 1
        assert pushed["queue"]["classes"][1] == {
            "name": "high",
            "queued": 1,
            "scheduled": 0,
            "sending": 0,
        }
        await gw.scheduler.run_until_idle()  # now a receipt sleeps on the clock too
        await clock.wait_sleeping(2)
        clock.advance(0.5)
        pushed = json.loads(await asyncio.wait_for(listener.get(), 5))
        assert pushed["queue"]["queued"] == 0
        assert pushed["throughput"]["sent_last_hour"] == 1
    finally:
        hub.unsubscribe(listener)
        await hub.aclose()


async def test_closing_the_hub_ends_every_stream(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(ROUTES)
    hub = DashboardHub(gw)
    listeners = [hub.subscribe(), hub.subscribe()]
    await hub.aclose()
    for listener in listeners:
        while (item := listener.get_nowait()) != b"":
            json.loads(item)  # a snapshot published before the close


def test_unit_rows_put_the_usual_columns_first_and_keep_other_plain_values() -> None:
    members = {
        "sim1": {"state": "ready", "signal": 21, "operator": "Telia", "imei": "35•••12", "x": [1]},
        "sim2": {"state": "drained", "errors": 3, "model": "E3372"},
    }
    columns, rows = unit_rows(members)
    assert columns == ["state", "signal", "operator", "errors"]
    assert rows[0] == {
        "name": "sim1",
        "cells": ["ready", signal_cell(21), "Telia", None],
        "extra": {"imei": "35•••12"},
        "drained": False,
    }
    assert rows[1]["cells"] == ["drained", signal_cell(None), None, 3]
    assert rows[1]["extra"] == {"model": "E3372"}
    assert rows[1]["drained"] is True  # its card offers Restore, not Drain


async def test_concurrent_refreshes_count_each_event_once(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(ROUTES)
    tail = EventTail(gw.usecases.activity, gw.clock)
    await tail.refresh()
    await accept(gw)
    await gw.scheduler.run_until_idle()
    await asyncio.gather(tail.refresh(), tail.refresh(), tail.refresh())
    assert tail.totals()["sent"] == 1


async def test_route_cards_count_scheduled_apart_from_queued(
    open_gateway: GatewayFactory,
) -> None:
    """The dashboard lists scheduled messages apart; the route cards agree with it."""
    gw = await open_gateway(ROUTES)
    await accept(gw)
    await accept(gw, send_at=datetime.fromtimestamp(gw.clock.time(), UTC) + timedelta(days=1))
    tail = EventTail(gw.usecases.activity, gw.clock)
    await tail.refresh()
    snap = await build_snapshot(gw, tail)
    assert (snap["queue"]["queued"], snap["queue"]["scheduled"]) == (1, 1)
    main = next(r for r in snap["routes"] if r["name"] == "main")
    assert (main["queued"], main["scheduled"]) == (1, 1)


def test_modem_signal_is_dbm_bars_and_words_never_the_bare_csq() -> None:
    columns, rows = unit_rows(
        {
            "sim1": {"state": "ready", "signal": 20},
            "sim2": {"state": "ready", "signal": None},  # the modem answered 99: unknown
            "sim3": {"state": "ready", "signal": 0},
            "sim4": {"state": "ready", "signal": 12},
        }
    )
    at = columns.index("signal")
    cells = [r["cells"][at] for r in rows]
    assert cells[0] == {"text": "\u221273 dBm, excellent (4 of 4 bars)", "bars": 4}
    assert cells[1] == {"text": "unknown", "bars": 0}
    assert cells[2] == {"text": "\u2212113 dBm, no signal (0 of 4 bars)", "bars": 0}
    assert cells[3] == {"text": "\u221289 dBm, fair (2 of 4 bars)", "bars": 2}
    assert signal_cell(99) == {"text": "unknown", "bars": 0}
