"""`/api/v1/reminder-rules` over the real app on loopback: create, versions, deactivate,
preview (DST-aware), scopes, audit, errors that name the field and never echo."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.clinical import notices
from gateway.clinical.notices import NoticeState
from gateway.tokens import create_token
from tests.clinical_rows import Booking, book, context
from tests.conftest import GatewayFactory
from tests.test_api import Api, _api, _error

BASE = "/api/v1/reminder-rules"
H = 3600.0
RULE = {"name": "Day before", "offset": "-1d", "delivery_time": "18:00", "template": "reminder"}


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway()
    async for a in _api(gw, frozenset({"admin"})):
        yield a


async def _put(api: Api, path: str, data: Any, token: str | None = None) -> Any:
    return await api.client.put(path, json=data, headers=api.auth(token))


async def _delete(api: Api, path: str, token: str | None = None) -> Any:
    return await api.client.delete(path, headers=api.auth(token))


async def test_create_version_deactivate_and_the_audit(api: Api) -> None:
    r = await api.post(BASE, {**RULE, "services": ["CARDIO"], "skip_if_booked_within": "48h",
                              "variants": {"a": 3, "b": 1}})  # fmt: skip
    assert r.status == 201, await r.text()
    made = await r.json()
    assert made["version"] == 1 and made["offset"] == "-1d" and made["purpose"] == "appointment"
    assert made["variants"] == {"a": 3, "b": 1}
    rid = made["id"]
    r = await _put(api, f"{BASE}/{rid}", {**RULE, "offset": "-2h", "delivery_time": None})
    assert r.status == 200, await r.text()
    assert (await r.json())["version"] == 2
    r = await _delete(api, f"{BASE}/{rid}")
    assert (await r.json())["active"] is False
    r = await api.get(f"{BASE}/{rid}")
    detail = await r.json()
    assert [v["version"] for v in detail["versions"]] == [1, 2, 3]
    assert [v["offset"] for v in detail["versions"]] == ["-1d", "-2h", "-2h"]
    assert detail["rule"]["version"] == 3 and detail["rule"]["active"] is False
    listed = await (await api.get(BASE)).json()
    assert [(x["id"], x["version"]) for x in listed["rules"]] == [(rid, 3)]
    actions = [(e.action, e.target_id) for e in await api.gw.audit.entries(limit=100)]
    assert [a for a in reversed(actions) if a[0].startswith("reminder_rule")] == [
        ("reminder_rule_created", rid),
        ("reminder_rule_changed", rid),
        ("reminder_rule_deactivated", rid),
    ]


async def test_a_new_rule_plans_upcoming_appointments_and_deactivating_withdraws(
    api: Api,
) -> None:
    gw = api.gw
    ctx = context(gw.store, gw.clock.time(), gw.clinical_hooks)
    appt = await gw.store.writer.run(lambda c: book(c, ctx, Booking(ctx.now + 72 * H)))
    assert gw.store.cipher is not None
    cipher = gw.store.cipher

    async def states() -> list[tuple[NoticeState, str | None]]:
        rows = await gw.store.writer.run(lambda c: notices.of_appointment(c, cipher, appt))
        return [(r.state, r.reason) for r in rows]

    assert await states() == []
    r = await api.post(BASE, RULE)
    rid = (await r.json())["id"]
    assert await states() == [(NoticeState.PENDING, None)]
    await _delete(api, f"{BASE}/{rid}")
    assert await states() == [(NoticeState.SUPERSEDED, "rule_changed")]


async def test_preview_gives_due_times_in_the_clinics_zone_across_dst(api: Api) -> None:
    rid = (await (await api.post(BASE, RULE)).json())["id"]
    two = (await (await api.post(BASE, {**RULE, "offset": "-2h", "delivery_time": None,
                                        "skip_if_booked_within": "3d"})).json())["id"]  # fmt: skip
    sample = {"start": "2030-03-10T15:00:00-04:00", "time_zone": "America/New_York"}
    r = await api.post(f"{BASE}/{rid}/preview", sample)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body == {
        "time_zone": "America/New_York",
        "due": [{"rule_id": rid, "version": 1, "name": "Day before", "status": "planned",
                 "due_at": "2030-03-09T18:00:00-05:00", "due_at_utc": "2030-03-09T23:00:00Z"}],
    }  # fmt: skip
    late = {**sample, "booked_at": "2030-03-09T10:00:00-05:00"}
    r = await api.post(f"{BASE}/{two}/preview", late)
    [due] = (await r.json())["due"]
    assert (due["status"], due["due_at"]) == ("booked_late", "2030-03-10T13:00:00-04:00")
    past = {"start": "2001-01-01T09:00:00+00:00", "time_zone": "UTC"}
    [due] = (await (await api.post(f"{BASE}/{rid}/preview", past)).json())["due"]
    assert due["status"] == "past"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"offset": "+2h"}, "offset"),
        ({"offset": "-91d"}, "offset"),
        ({"delivery_time": "25:00"}, "delivery_time"),
        ({"skip_if_booked_within": "forever"}, "skip_if_booked_within"),
        ({"purpose": "compliance"}, "purpose"),
        ({"variants": {"a b": 1}}, "variants"),
        ({"variants": {"a": 0}}, "variants"),
        ({"colour": "red"}, None),
        ({"template": ""}, "template"),
    ],
)
async def test_invalid_rules_are_refused_naming_the_field(
    api: Api, change: dict[str, Any], field: str | None
) -> None:
    r = await api.post(BASE, {**RULE, **change})
    error = await _error(r, 422, "unknown_field" if field is None else "invalid_field")
    assert error.get("field") == field
    for value in change.values():
        if isinstance(value, str) and len(value) > 2:
            assert value not in error["message"]


async def test_a_class_above_the_purposes_most_urgent_is_refused(api: Api) -> None:
    r = await api.post(BASE, {**RULE, "priority": "critical"})
    error = await _error(r, 422, "priority_not_allowed")
    assert error["field"] == "priority"


async def test_reading_needs_read_and_changing_needs_admin(api: Api) -> None:
    reader = (await create_token(api.gw.store, "r", frozenset({"read", "send"}), api.gw.clock)).text
    assert (await api.get(BASE, token=reader)).status == 200
    await _error(await api.post(BASE, RULE, token=reader), 403, "forbidden")
    rid = (await (await api.post(BASE, RULE)).json())["id"]
    await _error(await _put(api, f"{BASE}/{rid}", RULE, token=reader), 403, "forbidden")
    await _error(await _delete(api, f"{BASE}/{rid}", token=reader), 403, "forbidden")
    sample = {"start": "2030-01-01T09:00:00Z", "time_zone": "UTC"}
    assert (await api.post(f"{BASE}/{rid}/preview", sample, token=reader)).status == 200


async def test_a_body_that_is_not_json_is_a_400(api: Api) -> None:
    await _error(await api.post(BASE, b"\x00"), 400, "bad_json")


async def test_unknown_rules_and_zones(api: Api) -> None:
    missing = f"{BASE}/rul_{'0' * 16}"
    await _error(await api.get(missing), 404, "not_found")
    await _error(await _put(api, missing, RULE), 404, "not_found")
    await _error(await _delete(api, missing), 404, "not_found")
    rid = (await (await api.post(BASE, RULE)).json())["id"]
    bad = {"start": "2030-01-01T09:00:00Z", "time_zone": "Mars/Olympus"}
    error = await _error(await api.post(f"{BASE}/{rid}/preview", bad), 422, "invalid_field")
    assert error["field"] == "time_zone" and "Mars" not in error["message"]
    naive = {"start": "2030-01-01T09:00:00", "time_zone": "UTC"}
    await _error(await api.post(f"{BASE}/{rid}/preview", naive), 422, "invalid_field")


async def test_parallel_edits_make_one_version_each_and_one_current(api: Api) -> None:
    rid = (await (await api.post(BASE, RULE)).json())["id"]
    edits = [{**RULE, "offset": f"-{h}h", "delivery_time": None} for h in range(1, 9)]
    answers = await asyncio.gather(*(_put(api, f"{BASE}/{rid}", e) for e in edits))
    versions = sorted([(await r.json())["version"] for r in answers])
    assert versions == list(range(2, 10))
    detail = await (await api.get(f"{BASE}/{rid}")).json()
    assert [v["version"] for v in detail["versions"]] == list(range(1, 10))
    row = await api.gw.store.reader.one(
        "SELECT count(*) FROM reminder_rules WHERE id = ? AND current = 1", (rid,)
    )
    assert row is not None and row[0] == 1
