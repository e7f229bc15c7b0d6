"""Readiness: `/api/v1/healthz` answers 503 with the reason, and the dashboard stops
saying "Accepting messages", when no route can send (every route paused or down)."""

from __future__ import annotations

from typing import Any

from gateway.admin.dashboard import EventTail, build_snapshot
from gateway.app import Gateway
from tests.conftest import GatewayFactory, loopback
from tests.test_api import start_client

ROUTES = [
    {"name": "main", "type": "loopback", "latency": 0.0},
    {"name": "spare", "type": "loopback", "latency": 0.0},
]


async def _health(gw: Gateway) -> tuple[int, dict[str, Any]]:
    client = await start_client(gw)
    try:
        resp = await client.get("/api/v1/healthz")
        return resp.status, await resp.json()
    finally:
        await client.close()


async def _dashboard_accepting(gw: Gateway) -> bool:
    tail = EventTail(gw.usecases.activity, gw.clock)
    await tail.refresh()
    snap = await build_snapshot(gw, tail)
    return bool(snap["queue"]["accepting"])


async def test_every_route_paused_is_not_ready(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(ROUTES)
    status, body = await _health(gw)
    assert status == 200 and body["status"] == "ok" and body["ready"] is True
    assert await _dashboard_accepting(gw)

    await gw.set_route_paused("main", paused=True, actor="test")
    status, body = await _health(gw)
    assert status == 200, "one route can still send"

    await gw.set_route_paused("spare", paused=True, actor="test")
    status, body = await _health(gw)
    assert status == 503
    assert body["ready"] is False and body["reason"] == "every route is paused"
    assert not await _dashboard_accepting(gw)

    await gw.set_route_paused("spare", paused=False, actor="test")
    status, body = await _health(gw)
    assert status == 200 and await _dashboard_accepting(gw)


async def test_paused_and_down_routes_together_are_not_ready(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(ROUTES)
    await gw.set_route_paused("main", paused=True, actor="test")
    loopback(gw, "spare").set_down(True)
    status, body = await _health(gw)
    assert status == 503 and body["reason"] == "no route can send (paused or down)"
    assert body["routes_up"] == 0
    assert not await _dashboard_accepting(gw)


async def test_shutting_down_is_not_ready(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(ROUTES)
    gw.accepting = False
    status, body = await _health(gw)
    assert status == 503 and body["reason"] == "shutting down"
    assert body["accepting"] is False
