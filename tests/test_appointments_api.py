"""`/api/v1/appointments` over the real app on loopback: upsert by external key with
the same state machine as SIU, Idempotency-Key, parallel upserts of one key, cancel,
the debounce through the API, lists, and errors that never echo what was sent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.tokens import create_token
from tests.appointment_rig import DAY, hl7_time, siu
from tests.conftest import CANARY_DIGITS, CANARY_NUMBER, GatewayFactory
from tests.test_api import Api, _api, _error

MRN = "MRN-CANARY-7731"


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway(appointments={"time_zone": "America/New_York"})
    async for a in _api(gw, frozenset({"send", "read"})):
        yield a


def iso(seconds: float) -> str:
    t = hl7_time(seconds)
    return f"{t[0:4]}-{t[4:6]}-{t[6:8]}T{t[8:10]}:{t[10:12]}:{t[12:14]}.000Z"


def body(api: Api, key: str = "ehr-1", days: float = 10, **extra: Any) -> dict[str, Any]:
    return {
        "external_key": key,
        "patient": {"mrn": MRN, "number": CANARY_NUMBER, "language": "es"},
        "start": iso(api.gw.clock.time() + days * DAY),
        "clinic": "North Clinic",
        "location": "Room 4",
        "provider": "Dr House",
        **extra,
    }


async def test_create_read_move_and_the_number_stays_masked(api: Api) -> None:
    r = await api.post("/api/v1/appointments", body(api))
    assert r.status == 201, await r.text()
    saved = await r.json()
    assert (saved["status"], saved["version"], saved["created"]) == ("booked", 1, True)
    assert saved["start"] == body(api)["start"]
    r = await api.post("/api/v1/appointments", body(api, days=12))
    moved = await r.json()
    assert r.status == 200 and moved["id"] == saved["id"] and moved["version"] == 2
    r = await api.get(f"/api/v1/appointments/{saved['id']}")
    text = await r.text()
    assert CANARY_DIGITS not in text and MRN not in text and "House" not in text
    view = json.loads(text)
    assert view["number_masked"].startswith("+120") and view["number_masked"].endswith("47")
    assert (view["clinic"], view["location"], view["time_zone"]) == (
        "North Clinic",
        "Room 4",
        "America/New_York",
    )
    assert [e["event"] for e in view["events"]] == ["booked", "moved"]
    assert view["short_code"] == saved["short_code"]
    entries = await api.gw.audit.entries(limit=10)
    assert [e.action for e in entries if e.action == "appointment_saved"] == [
        "appointment_saved"
    ] * 2


async def test_cancel_then_rebook_through_the_api_is_one_moved_notice(api: Api) -> None:
    first = await (await api.post("/api/v1/appointments", body(api))).json()
    r = await api.post(f"/api/v1/appointments/{first['id']}/cancel", b"")
    assert r.status == 200 and (await r.json())["status"] == "cancelled"
    view = await (await api.get(f"/api/v1/appointments/{first['id']}")).json()
    assert [(n["kind"], n["state"]) for n in view["notices"]] == [
        ("appointment_cancelled", "pending")
    ]
    again = await api.post(f"/api/v1/appointments/{first['id']}/cancel", b"")
    assert (await again.json())["changed"] is False
    second = await (await api.post("/api/v1/appointments", body(api, "ehr-2", 11))).json()
    view = await (await api.get(f"/api/v1/appointments/{second['id']}")).json()
    assert [(n["kind"], n["state"]) for n in view["notices"]] == [("appointment_moved", "pending")]
    view = await (await api.get(f"/api/v1/appointments/{first['id']}")).json()
    assert [(n["state"], n["reason"]) for n in view["notices"]] == [("superseded", "rebooked")]


async def test_status_cancelled_in_a_post_cancels(api: Api) -> None:
    await api.post("/api/v1/appointments", body(api))
    r = await api.post("/api/v1/appointments", body(api, status="cancelled"))
    assert (await r.json())["status"] == "cancelled"


async def test_idempotency_key_replays_and_refuses_another_request(api: Api) -> None:
    headers = {"Idempotency-Key": "k-1"}
    r1 = await api.post("/api/v1/appointments", body(api), headers=headers)
    r2 = await api.post("/api/v1/appointments", body(api), headers=headers)
    assert (r1.status, r2.status) == (201, 201)
    assert await r1.json() == await r2.json()
    assert r2.headers.get("Idempotent-Replayed") == "true"
    r3 = await api.post("/api/v1/appointments", body(api, days=3), headers=headers)
    await _error(r3, 409, "idempotency_conflict")
    rows = await api.gw.store.reader.all("SELECT version FROM appointments")
    assert [tuple(r) for r in rows] == [(1,)]


async def test_parallel_upserts_of_one_key_make_one_appointment(api: Api) -> None:
    answers = await asyncio.gather(*(api.post("/api/v1/appointments", body(api)) for _ in range(8)))
    saved = [await r.json() for r in answers]
    assert sorted(r.status for r in answers) == [200] * 7 + [201]
    assert len({s["id"] for s in saved}) == 1
    assert [s["created"] for s in saved].count(True) == 1
    rows = await api.gw.store.reader.all("SELECT count(*), max(version) FROM appointments")
    assert tuple(rows[0]) == (1, 1)


async def test_a_stale_change_is_refused(api: Api) -> None:
    now = api.gw.clock.time()
    await api.post("/api/v1/appointments", body(api, changed_at=iso(now)))
    r = await api.post("/api/v1/appointments", body(api, days=5, changed_at=iso(now - 60)))
    await _error(r, 409, "stale_update")


async def test_errors_name_the_field_and_never_echo_it(api: Api) -> None:
    bad_number = body(api)
    bad_number["patient"] = {"mrn": MRN, "number": "+1 999 CANARY 12"}
    r = await api.post("/api/v1/appointments", bad_number)
    err = await _error(r, 422, "invalid_number")
    assert err["field"] == "patient.number" and "CANARY" not in json.dumps(err)
    r = await api.post("/api/v1/appointments", body(api, end=iso(api.gw.clock.time())))
    assert (await _error(r, 422, "invalid_end"))["field"] == "end"
    r = await api.post("/api/v1/appointments", body(api, status="deleted"))
    assert (await _error(r, 422, "invalid_field"))["field"] == "status"
    r = await api.post("/api/v1/appointments", body(api, colour="SECRET-VALUE"))
    assert "SECRET" not in json.dumps(await _error(r, 422, "unknown_field"))
    no_start = body(api)
    del no_start["start"]
    assert (await _error(await api.post("/api/v1/appointments", no_start), 422, "missing_field"))[
        "field"
    ] == "start"
    r = await api.post("/api/v1/appointments/apt_0000000000000000/cancel", b"")
    await _error(r, 404, "not_found")
    await _error(await api.get("/api/v1/appointments/apt_0000000000000000"), 404, "not_found")
    await _error(await api.get("/api/v1/appointments?status=gone"), 400, "invalid_query")
    await _error(await api.get("/api/v1/appointments?number=1"), 400, "invalid_query")
    await _error(await api.get("/api/v1/appointments?cursor=x"), 400, "invalid_query")


async def test_writing_needs_send_and_reading_needs_read(api: Api) -> None:
    read_only = (await create_token(api.gw.store, "r", frozenset({"read"}), api.gw.clock)).text
    r = await api.post("/api/v1/appointments", body(api), token=read_only)
    await _error(r, 403, "forbidden")
    assert (await api.get("/api/v1/appointments", token=read_only)).status == 200


async def test_an_hl7_appointment_is_cancelled_in_the_ehr_not_here(api: Api) -> None:
    from gateway.appointments.machine import AppointmentChange
    from gateway.appointments.siu import map_siu
    from gateway.clinical.commands import ApplyContext
    from gateway.clinical.profile import InterfaceProfile
    from tests.hl7_samples import parse

    profile = InterfaceProfile("ehr")
    now = api.gw.clock.time()
    [cmd] = map_siu(parse(siu("S12", sent=now, start=now + DAY)), profile)
    assert isinstance(cmd, AppointmentChange)
    ctx = ApplyContext(now, "ehr", "hl7:ehr", profile, api.gw.store, api.gw.clinical_hooks)
    await api.gw.store.writer.run(lambda conn: cmd.apply(conn, ctx))
    r = await api.post(f"/api/v1/appointments/{cmd.appointment_id}/cancel", b"")
    await _error(r, 409, "managed_by_interface")


async def test_the_list_filters_by_start_and_status_and_pages(api: Api) -> None:
    for i in range(5):
        await api.post("/api/v1/appointments", body(api, f"k{i}", days=i + 1))
    await api.post("/api/v1/appointments", body(api, "k4", days=5, status="noshow"))
    now = api.gw.clock.time()
    page = await (await api.get(f"/api/v1/appointments?from={now + 1.5 * DAY}&limit=2")).json()
    assert [a["start"] for a in page["items"]] == [iso(now + 2 * DAY), iso(now + 3 * DAY)]
    nxt = await (await api.get(f"/api/v1/appointments?limit=2&cursor={page['next_cursor']}")).json()
    assert [a["start"] for a in nxt["items"]] == [iso(now + 4 * DAY), iso(now + 5 * DAY)]
    only = await (await api.get("/api/v1/appointments?status=noshow")).json()
    assert [a["status"] for a in only["items"]] == ["noshow"]
    until = await (await api.get(f"/api/v1/appointments?to={iso(now + 1.5 * DAY)}")).json()
    assert len(until["items"]) == 1 and CANARY_DIGITS not in json.dumps(until)


async def test_an_erased_appointment_can_no_longer_be_cancelled(api: Api) -> None:
    # Found by the API fuzzer: erasure blanks the external key, and a cancel then read
    # the appointment as a new booking (422 "needs its patient").
    saved = await (await api.post("/api/v1/appointments", body(api))).json()
    admin = await create_token(api.gw.store, "dpo", frozenset({"admin"}), api.gw.clock)
    r = await api.post("/api/v1/erasures", {"number": CANARY_NUMBER}, admin.text)
    assert r.status == 200, await r.text()
    r = await api.post(f"/api/v1/appointments/{saved['id']}/cancel", b"")
    error = await _error(r, 409, "erased")
    assert CANARY_DIGITS not in json.dumps(error)
