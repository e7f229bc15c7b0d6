"""Issue 13 point 5 over HTTP: `POST/GET/DELETE /medications` and
`POST /events/results-available` on the real app on loopback: the same commands as the
feeds, idempotency and the once-per-order check under parallel requests, errors as JSON
with stable codes that never echo what was sent, audit, OpenAPI."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from gateway.clinical import patients
from gateway.clinical.commands import ApplyContext, ClinicalHooks
from gateway.clinical.profile import InterfaceProfile
from gateway.tokens import create_token
from tests.conftest import CANARY_DIGITS, CANARY_NUMBER, GatewayFactory, set_time_zone
from tests.test_api import Api, _api, _error

NY = "America/New_York"
LABEL = "Warfarin 5 mg"
TOLL_FREE = "+18885551212"
SCHEDULE = {
    "number": CANARY_NUMBER,
    "times": ["08:00", "20:00"],
    "start_date": "2027-01-15",
    "end_date": "2027-01-17",
    "time_zone": NY,
}


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway()
    async for a in _api(gw, frozenset({"send", "read"})):
        yield a


async def _at(api: Api, when: str) -> None:
    """Move the gateway's fake clock on to `when`."""
    target = datetime.fromisoformat(when).timestamp()
    api.gw.clock.advance(target - api.gw.clock.time())  # type: ignore[attr-defined]


async def _delete(api: Api, path: str, token: str | None = None) -> Any:
    return await api.client.delete(path, headers=api.auth(token))


async def test_a_schedule_is_planned_read_listed_and_stopped(api: Api) -> None:
    await _at(api, "2027-01-15T12:00:00+00:00")  # 07:00 in New York
    r = await api.post("/api/v1/medications", SCHEDULE)
    assert r.status == 201, await r.text()
    made = await r.json()
    assert made["state"] == "active" and made["times"] == ["08:00", "20:00"]
    assert (made["start_date"], made["end_date"], made["time_zone"]) == (
        "2027-01-15",
        "2027-01-17",
        NY,
    )
    assert made["has_label"] is False and CANARY_DIGITS not in json.dumps(made)
    r = await api.get(f"/api/v1/medications/{made['id']}")
    got = await r.json()
    assert [d["due_at"] for d in got["doses"]] == [
        "2027-01-15T13:00:00.000Z",
        "2027-01-16T01:00:00.000Z",
        "2027-01-16T13:00:00.000Z",
        "2027-01-17T01:00:00.000Z",
    ]  # 08:00 and 20:00 EST within 48 h
    assert {d["state"] for d in got["doses"]} == {"pending"}
    r = await api.get("/api/v1/medications?state=active")
    page = await r.json()
    assert [i["id"] for i in page["items"]] == [made["id"]] and page["next_cursor"] is None
    r = await _delete(api, f"/api/v1/medications/{made['id']}")
    stopped = await r.json()
    assert r.status == 200 and stopped["state"] == "stopped"
    assert stopped["stop_reason"] == "stopped_by_api"
    assert {d["state"] for d in stopped["doses"]} == {"cancelled"}
    entries = await api.gw.audit.entries(limit=100)
    actions = {(e.action, e.target_id) for e in entries}
    assert ("medication_schedule_created", made["id"]) in actions
    assert ("medication_schedule_stopped", made["id"]) in actions
    r = await _delete(api, "/api/v1/medications/med_0000000000000000")
    await _error(r, 404, "not_found")


async def test_the_zone_is_the_contacts_else_the_area_codes(api: Api) -> None:
    await _at(api, "2027-01-15T12:00:00+00:00")
    no_zone = {k: v for k, v in SCHEDULE.items() if k != "time_zone"}
    made = await (await api.post("/api/v1/medications", no_zone)).json()
    assert made["time_zone"] == NY  # +1 202: Washington, DC
    await set_time_zone(api.gw, CANARY_NUMBER, "America/Los_Angeles")
    made = await (await api.post("/api/v1/medications", no_zone)).json()
    assert made["time_zone"] == "America/Los_Angeles"


async def test_an_external_key_changes_its_schedule_until_it_is_stopped(api: Api) -> None:
    await _at(api, "2027-01-15T12:00:00+00:00")
    keyed = {**SCHEDULE, "external_key": "rx-77"}
    first = await (await api.post("/api/v1/medications", keyed)).json()
    r = await api.post("/api/v1/medications", {**keyed, "times": ["09:00"]})
    assert r.status == 200
    changed = await r.json()
    assert changed["id"] == first["id"] and changed["version"] == 2
    assert changed["times"] == ["09:00"]
    await _delete(api, f"/api/v1/medications/{first['id']}")
    r = await api.post("/api/v1/medications", keyed)
    await _error(r, 409, "schedule_stopped")


async def test_parallel_posts_of_one_external_key_make_one_schedule(api: Api) -> None:
    await _at(api, "2027-01-15T12:00:00+00:00")
    keyed = {**SCHEDULE, "external_key": "rx-88"}
    answers = await asyncio.gather(*(api.post("/api/v1/medications", keyed) for _ in range(5)))
    assert sorted(a.status for a in answers) == [200, 200, 200, 200, 201]
    assert len({(await a.json())["id"] for a in answers}) == 1
    row = await api.gw.store.reader.one("SELECT count(*), max(version) FROM medication_schedules")
    assert row is not None and tuple(row) == (1, 5)
    doses = await api.gw.store.reader.all(
        "SELECT due_at FROM clinical_notices WHERE state = 'pending'"
    )
    assert len(doses) == len({d[0] for d in doses}) == 4  # each re-plan superseded the last


async def test_an_idempotency_key_makes_one_schedule_under_parallel_retries(api: Api) -> None:
    await _at(api, "2027-01-15T12:00:00+00:00")
    headers = {"Idempotency-Key": "k-1"}
    answers = await asyncio.gather(
        *(api.post("/api/v1/medications", SCHEDULE, headers=headers) for _ in range(5))
    )
    bodies = [await a.json() for a in answers]
    assert [a.status for a in answers] == [201] * 5
    assert len({b["id"] for b in bodies}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == 4
    row = await api.gw.store.reader.one("SELECT count(*) FROM medication_schedules")
    assert row is not None and row[0] == 1
    r = await api.post("/api/v1/medications", {**SCHEDULE, "times": ["10:00"]}, headers=headers)
    await _error(r, 409, "idempotency_conflict")


async def test_errors_are_json_with_stable_codes_and_never_echo(api: Api) -> None:
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        ({**SCHEDULE, "label": LABEL}, 422, "drug_names_not_allowed", "label"),
        ({**SCHEDULE, "number": "+1 202 555 01"}, 422, "invalid_number", "number"),
        (
            {**SCHEDULE, "patient": {"source": "ehr", "mrn": "M1"}},
            422,
            "invalid_patient",
            "patient",
        ),
        (
            {k: v for k, v in SCHEDULE.items() if k != "number"}
            | {"patient": {"source": "ehr", "mrn": "NOBODY-9"}},
            404,
            "unknown_patient",
            "patient",
        ),
        (  # a toll-free number: eleven zones, none of them the patient's for sure
            {k: v for k, v in SCHEDULE.items() if k != "time_zone"} | {"number": TOLL_FREE},
            422,
            "time_zone_required",
            "time_zone",
        ),
        ({**SCHEDULE, "time_zone": "Mars/Olympus_Mons"}, 422, "invalid_time_zone", "time_zone"),
        ({**SCHEDULE, "end_date": "2027-01-14"}, 422, "invalid_dates", "end_date"),
        ({**SCHEDULE, "times": ["25:00"]}, 422, "invalid_field", None),
        ({**SCHEDULE, "times": []}, 422, "invalid_field", None),
        ({**SCHEDULE, "dose_mg": 5}, 422, "unknown_field", None),  # never named back
    ]
    for body, status, code, field in cases:
        r = await api.post("/api/v1/medications", body)
        error = await _error(r, status, code)
        if field is not None:
            assert error.get("field") == field, (code, error)
        text = json.dumps(error)
        for sent in (LABEL, "NOBODY-9", "Mars", "555 01", "25:00", CANARY_DIGITS, "8885551212"):
            assert sent not in text, (code, sent)
    r = await api.post("/api/v1/medications", b"{not json")
    await _error(r, 400, "bad_json")
    reader = (await create_token(api.gw.store, "ro", frozenset({"read"}), api.gw.clock)).text
    r = await api.post("/api/v1/medications", SCHEDULE, token=reader)
    await _error(r, 403, "forbidden")
    for query in ("state=gone", "limit=0", "cursor=abc", "colour=red"):
        r = await api.get(f"/api/v1/medications?{query}")
        await _error(r, 400, "invalid_query")
    counted = await api.gw.store.reader.one("SELECT count(*) FROM medication_schedules")
    assert counted is not None and counted[0] == 0


async def test_a_label_is_kept_only_where_drug_names_are_allowed(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(medication={"allow_drug_names": True})
    async for api in _api(gw, frozenset({"send", "read"})):
        await _at(api, "2027-01-15T12:00:00+00:00")
        r = await api.post("/api/v1/medications", {**SCHEDULE, "label": LABEL})
        made = await r.json()
        assert r.status == 201 and made["has_label"] is True
        assert LABEL not in await (await api.get(f"/api/v1/medications/{made['id']}")).text()

        def variables(conn: sqlite3.Connection) -> set[str]:
            from gateway.clinical import notices
            from gateway.store.consent_sql import cipher_of

            rows = conn.execute(
                "SELECT id, kind, contact_idx, template, purpose, due_at, variables_ct,"
                " language, expires_at, patient_id, appointment_id, appt_version, rule_id,"
                " rule_version, variant, ref, priority, state, reason, message_id"
                " FROM clinical_notices"
            ).fetchall()
            return {
                notices.row_of(cipher_of(gw.store), r).notice.variables["medication"] for r in rows
            }

        assert await gw.store.writer.run(variables) == {LABEL}


async def test_results_available_once_per_order_under_parallel_posts(api: Api) -> None:
    event = {"number": CANARY_NUMBER, "order": "ACC-1", "order_namespace": "LAB"}
    answers = await asyncio.gather(
        *(api.post("/api/v1/events/results-available", event) for _ in range(6))
    )
    bodies = [await a.json() for a in answers]
    assert sorted(a.status for a in answers) == [200] * 5 + [201]
    assert sorted(b["outcome"] for b in bodies) == ["duplicate"] * 5 + ["notice"]
    made = next(b for b in bodies if b["outcome"] == "notice")
    assert made["notice_id"].startswith("ntc_") and made["due_at"] is not None
    r = await api.post("/api/v1/events/results-available", {**event, "status": "corrected"})
    assert r.status == 201 and (await r.json())["outcome"] == "joined"  # the first still pending
    rows = await api.gw.store.reader.all("SELECT kind, purpose, template FROM clinical_notices")
    assert [tuple(r) for r in rows] == [("result_available", "results", "result_available")]


async def test_results_available_for_a_patient_known_by_mrn(api: Api) -> None:
    ctx = ApplyContext(
        api.gw.clock.time(),
        "ehr",
        "hl7:ehr",
        InterfaceProfile("ehr"),
        api.gw.store,
        ClinicalHooks(),
    )
    phone = patients.Phone(CANARY_NUMBER, "PID-13", "PRN", "CP", 0)
    details = patients.PatientDetails(patients.PatientRef("HOSP", "MRN-5"), (phone,), "es")
    await api.gw.store.writer.run(lambda conn: patients.upsert(conn, ctx, details))
    body = {"patient": {"source": "ehr", "mrn": "MRN-5", "authority": "HOSP"}, "order": "A9"}
    r = await api.post("/api/v1/events/results-available", body)
    assert r.status == 201, await r.text()
    row = await api.gw.store.reader.one("SELECT language, contact_idx FROM clinical_notices")
    assert row is not None and row[0] == "es"
    assert bytes(row[1]) == api.gw.store.blind_index(CANARY_NUMBER)
    r = await api.post(
        "/api/v1/events/results-available", {**body, "patient": {"source": "lab", "mrn": "MRN-5"}}
    )
    error = await _error(r, 404, "unknown_patient")
    assert "MRN-5" not in json.dumps(error)


async def test_the_openapi_document_lists_them(api: Api) -> None:
    doc = await (await api.get("/api/v1/openapi.json")).json()
    paths = doc["paths"]
    assert {"post", "get"} <= set(paths["/api/v1/medications"])
    assert {"get", "delete"} <= set(paths["/api/v1/medications/{id}"])
    assert "post" in paths["/api/v1/events/results-available"]


async def test_the_periodic_top_up_extends_the_plan_once(api: Api) -> None:
    """`run_top_up` plans on its start and every `top_up_minutes` on the gateway's clock:
    the doses beyond the first 48 h appear as time goes by, none twice."""
    await _at(api, "2027-01-15T12:00:00+00:00")
    long = {**SCHEDULE, "times": ["08:00"], "end_date": "2027-01-20"}
    made = await (await api.post("/api/v1/medications", long)).json()

    async def due_times() -> list[str]:
        got = await (await api.get(f"/api/v1/medications/{made['id']}")).json()
        return [d["due_at"][:10] for d in got["doses"]]

    assert await due_times() == ["2027-01-15", "2027-01-16"]
    clock = api.gw.clock
    asleep = clock.sleeping  # type: ignore[attr-defined]
    task = asyncio.create_task(api.gw.medications.run_top_up())
    try:
        await clock.wait_sleeping(asleep + 1)  # type: ignore[attr-defined]
        assert await due_times() == ["2027-01-15", "2027-01-16"]  # nothing new yet
        for _ in range(30):  # 30 hours, an hour at a time
            clock.advance(3600)  # type: ignore[attr-defined]
            await clock.wait_sleeping(asleep + 1)  # type: ignore[attr-defined]
        assert await due_times() == ["2027-01-15", "2027-01-16", "2027-01-17", "2027-01-18"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_the_settings_are_documented_and_refused_by_key() -> None:
    from gateway import config
    from gateway.results.settings import MedicationConfig, ResultsConfig
    from tests.test_config import EXAMPLE

    text = EXAMPLE.read_text()
    for struct in (ResultsConfig, MedicationConfig):
        for name in struct.__struct_fields__:
            assert f"{name} =" in text or f"[medication.{name}]" in text, name
    for raw, message in [
        ({"results": {"notify_delay_hours": -1}}, "results.notify_delay_hours:"),
        ({"medication": {"plan_ahead_hours": 0}}, "medication.plan_ahead_hours:"),
        ({"medication": {"allow_drug_names": "yes"}}, "medication.allow_drug_names:"),
        ({"medication": {"pattern_times": {"bid": ["08:00"]}}}, "medication.pattern_times.bid:"),
        ({"medication": {"pattern_times": {"BID": ["8am"]}}}, "medication.pattern_times.BID:"),
        ({"medication": {"pattern_times": {"BID": []}}}, "medication.pattern_times.BID:"),
        ({"medication": {"colour": 1}}, "medication.colour:"),
    ]:
        with pytest.raises(config.ConfigError) as e:
            config.from_mapping(raw)
        assert str(e.value).startswith(message), str(e.value)
