"""Issue 10 point 11: dates are bounded at accept, and every view renders any stored
time, including ones older versions let in (year 9999 and beyond, year 1 and before)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from gateway.api.views import iso
from gateway.models import Priority, new_message_id
from gateway.store.store import NewMessage
from gateway.tokens import create_token
from tests.admin_support import PanelClient
from tests.conftest import CANARY_NUMBER, FAST_PASSWORD_HASH, GatewayFactory
from tests.test_api import Api, _api, _error, start_client

NOW = 1_800_000_000.0  # the FakeClock's start


def _at(seconds: float, offset_hours: int = 0) -> str:
    zone = timezone(timedelta(hours=offset_hours))
    return datetime.fromtimestamp(seconds, UTC).astimezone(zone).isoformat()


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> Any:
    gw = await open_gateway()
    assert gw.clock.time() == NOW
    async for a in _api(gw):
        yield a


REFUSED: list[tuple[str, str]] = [
    ("send_at", "9999-12-31T23:00:00-12:00"),
    ("send_at", "0001-01-01T00:00:00+14:00"),
    ("send_at", _at(NOW + 3600, 0).replace("+00:00", "+15:00")),  # no zone is +15:00
    ("send_at", _at(NOW + 3600, 0).replace("+00:00", "-14:30")),
    ("send_at", _at(NOW - 3600)),  # an hour ago: not "now" any more
    ("send_at", _at(NOW + 366 * 86400)),  # beyond queue.max_schedule_days = 365
    ("expires_at", "9999-12-31T23:59:59+00:00"),
    ("expires_at", _at(NOW + 366 * 86400)),
    ("expires_at", _at(NOW + 3 * 86400, 0).replace("+00:00", "+23:59")),
]


@pytest.mark.parametrize(("field", "value"), REFUSED)
async def test_out_of_range_dates_are_refused_at_accept(api: Api, field: str, value: str) -> None:
    resp = await api.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": "x", field: value})
    error = await _error(resp, 422, "invalid_field")
    assert error["field"] == field
    assert value not in json.dumps(error)
    batch = {
        "messages": [
            {"to": CANARY_NUMBER, "body": "ok"},
            {"to": CANARY_NUMBER, "body": "x", field: value},
        ]
    }
    result = await (await api.post("/api/v1/messages/batch", batch)).json()
    assert (result["accepted"], result["rejected"]) == (1, 1)
    assert result["results"][1]["error"]["field"] == f"messages[1].{field}"
    assert await api.count() == 1


async def test_dates_within_bounds_are_accepted(api: Api) -> None:
    cases = [
        ({"send_at": _at(NOW - 60)}, "queued"),  # a client clock a minute behind ours
        ({"send_at": _at(NOW + 364 * 86400, 14)}, "scheduled"),
        ({"send_at": _at(NOW + 3600, -12), "expires_at": _at(NOW + 7200, 5)}, "scheduled"),
        ({"expires_at": _at(NOW + 364 * 86400)}, "queued"),
    ]
    for fields, status in cases:
        resp = await api.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": "x", **fields})
        assert resp.status == 202, (fields, await resp.text())
        assert (await resp.json())["status"] == status


async def test_the_horizon_is_configurable(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(queue={"max_schedule_days": 30})
    async for api in _api(gw):
        for days, status in ((29, 202), (31, 422)):
            body = {"to": CANARY_NUMBER, "body": "x", "send_at": _at(NOW + days * 86400)}
            assert (await api.post("/api/v1/messages", body)).status == status


# What older versions could store: the edges of datetime's range, beyond them both
# ways, and values no datetime holds at all.
STORED = [
    253402300799.0,
    -62135596800.0,
    253402340400.0,
    -62135647200.0,
    1e300,
    -1e300,
    float("inf"),
]


async def _store_odd_rows(gw: Any, token_id: str) -> list[str]:
    ids = []
    for value in STORED:
        mid = new_message_id()
        message = NewMessage(
            id=mid,
            token_id=token_id,
            priority=Priority.NORMAL,
            to=CANARY_NUMBER,
            body="x",
            encoding="gsm7",
            segments=1,
            created_at=value,
            expires_at=value,
            send_at=value,
        )
        await gw.store.insert(gw.store.insert_statements(message))
        ids.append(mid)
    return ids


async def test_any_stored_time_renders_in_api_and_panel(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(admin=FAST_PASSWORD_HASH)
    token = await create_token(gw.store, "t", frozenset({"send", "read"}), gw.clock)
    ids = await _store_odd_rows(gw, token.id)
    await gw.stop()
    gw = await open_gateway(admin=FAST_PASSWORD_HASH)  # across a restart, as in the report
    client = await start_client(gw)
    panel = PanelClient(gw, client)
    try:
        auth = {"Authorization": f"Bearer {token.text}"}
        page = await client.get("/api/v1/messages", headers=auth)
        assert page.status == 200, await page.text()
        listed = (await page.json())["messages"]
        assert {m["id"] for m in listed} == set(ids)
        for mid in ids:
            one = await client.get(f"/api/v1/messages/{mid}", headers=auth)
            assert one.status == 200, await one.text()
            view = await one.json()
            assert view["send_at"] and view["expires_at"] and view["created_at"]
        await panel.add_user("ada")
        await panel.login_ok("ada")
        html = await client.get("/messages")
        assert html.status == 200, await html.text()
        for mid in ids:
            resp = await client.get(f"/messages/{mid}")
            assert resp.status == 200, await resp.text()
            assert "9999-12-31" in await resp.text() or "0001-01-01" in await resp.text()
    finally:
        await client.close()


def test_iso_formats_every_value() -> None:
    assert iso(253402300799) == "9999-12-31T23:59:59.000Z"
    assert iso(253402340400) == "9999-12-31T23:59:59.999Z"
    assert iso(-62135647200) == "0001-01-01T00:00:00.000Z"
    assert iso(float("inf")) == "9999-12-31T23:59:59.999Z"
    assert iso(float("nan")) is None
    assert iso(None) is None
    assert iso(1.5) == "1970-01-01T00:00:01.500Z"
