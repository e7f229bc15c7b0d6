"""Issue 12 point 7: `/optouts`, `/consents`, `/contacts` over the real app on loopback,
the ledger behind them, and the `consent.changed` event a webhook receiver gets."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.consent import ledger
from gateway.consent.purposes import DEFAULT_POLICIES, Purpose
from gateway.integrations.events import OutboxEvent
from gateway.integrations.mqtt import event_payload, event_topic
from gateway.tokens import create_token
from gateway.usecases import consent_csv
from tests import webhook_rig
from tests.conftest import CANARY_DIGITS, CANARY_NUMBER, GatewayFactory
from tests.test_api import Api, _api, _error
from tests.test_outbox import FAST, hook
from tests.webhook_rig import Receiver, write_secret

receivers = webhook_rig.receivers  # the fixture
NUMBER = {"number": CANARY_NUMBER}
MARKETING = DEFAULT_POLICIES[Purpose.MARKETING]


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway(consent={"programs": [{"name": "pharmacy", "senders": ["12345"]}]})
    async for a in _api(gw, frozenset({"read", "phi", "consent"})):
        yield a


async def _token(api: Api, *scopes: str) -> str:
    return (await create_token(api.gw.store, "t", frozenset(scopes), api.gw.clock)).text


async def _ledger_rows(api: Api) -> int:
    row = await api.gw.store.reader.one("SELECT count(*) FROM consent_ledger")
    assert row is not None
    return int(row[0])


async def _audit(api: Api) -> list[Any]:
    return list(reversed(await api.gw.audit.entries(limit=1000)))


async def test_opt_out_by_phone_then_lookup_shows_standing_and_history(api: Api) -> None:
    r = await api.post(
        "/api/v1/optouts", {**NUMBER, "source": "phone", "note": "called the ward desk"}
    )
    assert r.status == 201, await r.text()
    done = await r.json()
    assert (done["decision"], done["scope"], done["program"], done["source"]) == (
        "opt_out",
        "all",
        "*",
        "phone",
    )
    r = await api.get(f"/api/v1/optouts?number={CANARY_NUMBER}")
    view = await r.json()
    assert view["standing"] == [
        {
            "program": "*",
            "scope": "all",
            "status": "opted_out",
            "since": view["standing"][0]["since"],
            "source": "phone",
            "written": False,
        }
    ]
    (entry,) = view["history"]
    assert entry["id"] == done["id"] and entry["note"] == "called the ward desk"
    assert entry["actor"].startswith("token:")
    # The same view under /consents, in the national form too (queue.default_region).
    r = await api.get("/api/v1/consents?number=(202)%20555-0147")
    assert (await r.json())["history"] == view["history"]
    actions = [(e.action, e.target_kind) for e in await _audit(api)]
    assert ("consent_recorded", "consent") in actions
    assert actions.count(("consent_lookup", "contact")) == 2
    assert CANARY_DIGITS not in repr(await _audit(api))
    policy = DEFAULT_POLICIES[Purpose.APPOINTMENT]

    def standing(conn: Any) -> str | None:
        idx = api.gw.store.blind_index(CANARY_NUMBER)
        return ledger.standing(conn, idx, "default", policy).refusal(policy)

    assert await api.gw.store.writer.run(standing) == "opted_out"


async def test_scopes_read_needs_phi_write_needs_consent(api: Api) -> None:
    reader = await _token(api, "read")
    sender = await _token(api, "send", "read", "phi")
    r = await api.get(f"/api/v1/optouts?number={CANARY_NUMBER}", token=reader)
    error = await _error(r, 403, "forbidden")
    assert error["field"] == "number"
    r = await api.post("/api/v1/optouts", NUMBER, token=sender)
    await _error(r, 403, "forbidden")
    r = await api.get("/api/v1/consents/export", token=await _token(api, "consent"))
    await _error(r, 403, "forbidden")
    assert await _ledger_rows(api) == 0


async def test_errors_never_echo_the_number(api: Api) -> None:
    with capture_logs() as logs:
        for bad in ("+1202555014", "2025550147x", "abc"):
            r = await api.post("/api/v1/optouts", {"number": bad})
            error = await _error(r, 422, "invalid_number")
            assert error["field"] == "number" and bad not in repr(error)
        r = await api.post("/api/v1/optouts", {**NUMBER, "scope": "purpose:compliance"})
        error = await _error(r, 422, "invalid_field")
        assert error["field"] == "scope"
        r = await api.client.delete(
            f"/api/v1/optouts?number={CANARY_NUMBER}&scope=kind:compliance", headers=api.auth()
        )
        await _error(r, 422, "invalid_scope")
        r = await api.post("/api/v1/optouts", {**NUMBER, "program": "nope"})
        await _error(r, 422, "unknown_program")
        r = await api.post("/api/v1/optouts", {**NUMBER, "colour": "red"})
        await _error(r, 422, "unknown_field")
        r = await api.get("/api/v1/optouts")
        await _error(r, 400, "invalid_query")
    assert CANARY_DIGITS not in repr(logs)
    assert await _ledger_rows(api) == 0


async def test_delete_optout_resubscribes_without_deleting_and_only_after_an_opt_out(
    api: Api,
) -> None:
    path = f"/api/v1/optouts?number={CANARY_NUMBER}"
    r = await api.client.delete(path, headers=api.auth())
    await _error(r, 404, "not_opted_out")
    await api.post("/api/v1/optouts", {**NUMBER, "program": "pharmacy"})
    r = await api.client.delete(path + "&program=pharmacy", headers=api.auth())
    assert r.status == 201 and (await r.json())["decision"] == "opt_in"
    assert await _ledger_rows(api) == 2  # the opt-out is still there, as evidence
    view = await (await api.get(path)).json()
    assert [h["decision"] for h in view["history"]] == ["opt_out", "opt_in"]
    assert view["standing"][0]["status"] == "opted_in"


async def test_parallel_resubscribes_lift_one_opt_out_once(api: Api) -> None:
    await api.post("/api/v1/optouts", NUMBER)
    path = f"/api/v1/optouts?number={CANARY_NUMBER}"
    answers = await asyncio.gather(
        *(api.client.delete(path, headers=api.auth()) for _ in range(12))
    )
    assert sorted(r.status for r in answers) == [201] + [404] * 11
    assert await _ledger_rows(api) == 2


async def test_marketing_consent_needs_its_disclosure_text(api: Api) -> None:
    r = await api.post("/api/v1/consents", {**NUMBER, "scope": "purpose:marketing"})
    error = await _error(r, 422, "disclosure_required")
    assert error["field"] == "disclosure"
    text = "Reply YES to get news from St Mary's. Msg & data rates may apply."
    r = await api.post(
        "/api/v1/consents", {**NUMBER, "scope": "purpose:marketing", "disclosure": text}
    )
    assert r.status == 201
    assert (await r.json())["scope"] == "purpose:marketing"
    view = await (await api.get(f"/api/v1/consents?number={CANARY_NUMBER}")).json()
    assert view["standing"][0]["written"] is True
    assert view["history"][0]["disclosure"] == text
    idx = api.gw.store.blind_index(CANARY_NUMBER)
    refusal = await api.gw.store.writer.run(
        lambda conn: ledger.standing(conn, idx, "default", MARKETING).refusal(MARKETING)
    )
    assert refusal is None
    # Withdrawing it is an opt-out of the same scope.
    r = await api.client.delete(
        f"/api/v1/consents?number={CANARY_NUMBER}&scope=purpose:marketing", headers=api.auth()
    )
    assert (await r.json())["decision"] == "opt_out"
    refusal = await api.gw.store.writer.run(
        lambda conn: ledger.standing(conn, idx, "default", MARKETING).refusal(MARKETING)
    )
    assert refusal == "opted_out"
    r = await api.post("/api/v1/optouts", {**NUMBER, "disclosure": text})
    await _error(r, 422, "unknown_field")


async def test_contacts_validate_zone_and_language(api: Api) -> None:
    r = await api.client.put(
        "/api/v1/contacts", json={**NUMBER, "time_zone": "Mars/Olympus"}, headers=api.auth()
    )
    await _error(r, 422, "invalid_time_zone")
    r = await api.client.put(
        "/api/v1/contacts", json={**NUMBER, "language": "fr"}, headers=api.auth()
    )
    error = await _error(r, 422, "invalid_language")  # the configured reply languages
    assert error["field"] == "language"
    r = await api.get(f"/api/v1/contacts?number={CANARY_NUMBER}")
    await _error(r, 404, "not_found")
    r = await api.client.put(
        "/api/v1/contacts",
        json={**NUMBER, "time_zone": "America/Chicago", "language": "es", "patient_ref": "MRN-7"},
        headers=api.auth(),
    )
    assert r.status == 200, await r.text()
    r = await api.client.put(
        "/api/v1/contacts", json={**NUMBER, "patient_ref": None}, headers=api.auth()
    )
    got = await (await api.get(f"/api/v1/contacts?number={CANARY_NUMBER}")).json()
    assert (got["time_zone"], got["language"], got["patient_ref"]) == (
        "America/Chicago",
        "es",
        None,
    )
    row = await api.gw.store.reader.one("SELECT time_zone, language FROM contacts")
    assert row is not None and tuple(row) == ("America/Chicago", "es")
    actions = [e.action for e in await _audit(api)]
    assert actions.count("contact_updated") == 2


async def test_import_and_export_through_the_api(api: Api) -> None:
    body = (
        "Phone,Status,Purpose,Date,Notes\n"
        f"{CANARY_NUMBER},unsubscribed,marketing,2024-05-01,paper form\n"
        "+12025550148,opt-out,,2024-05-02T10:00:00Z,\n"
        "not-a-number,opt-out,,,\n"
    )
    headers = {**api.auth(), "Content-Type": "text/csv"}
    r = await api.client.post("/api/v1/consents/import", data=body, headers=headers)
    report = await r.json()
    assert r.status == 200, report
    assert (report["rows"], report["appended"], report["failed"]) == (3, 2, 1)
    assert report["errors"] == [{"line": 4, "code": "invalid_number", "field": "number"}]
    r = await api.client.post("/api/v1/consents/import", data=body, headers=headers)
    assert (await r.json())["unchanged"] == 2  # idempotent
    r = await api.client.post("/api/v1/consents/import", data="a,b\n1,2\n", headers=headers)
    await _error(r, 422, "missing_column")
    r = await api.get("/api/v1/consents/export")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await r.text())))
    assert [(x["number"], x["scope"], x["source"]) for x in rows] == [
        (CANARY_NUMBER, "purpose:marketing", "import"),
        ("+12025550148", "all", "import"),
    ]
    actions = [e.action for e in await _audit(api)]
    assert actions.count("consent_imported") == 3 and "consent_exported" in actions


async def test_a_webhook_receiver_gets_consent_changed(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any
) -> None:
    ids_path, ids_secret = write_secret(tmp_path, "ids")
    phi_path, phi_secret = write_secret(tmp_path, "phi")
    ids_rx: Receiver = await receivers(ids_secret)
    phi_rx: Receiver = await receivers(phi_secret)
    events = ["consent.changed"]
    gw = await open_gateway(
        webhooks=[
            hook("ids", ids_rx.url, ids_path, events=events),
            hook("phi", phi_rx.url, phi_path, events=events, phi=True),
        ],
        outbox=FAST,
    )
    async for api in _api(gw, frozenset({"consent"})):
        r = await api.post("/api/v1/optouts", {**NUMBER, "source": "email"})
        entry_id = (await r.json())["id"]
    await gw.outbox.run_once("webhook:ids")
    await gw.outbox.run_once("webhook:phi")
    (plain,) = ids_rx.events
    assert plain["body"]["type"] == "consent.changed"
    assert plain["body"]["data"] == {
        "consent_id": entry_id,
        "program": "*",
        "scope": "all",
        "decision": "opt_out",
    }
    assert CANARY_DIGITS not in repr(plain)
    (full,) = phi_rx.events
    assert full["body"]["data"]["number"] == CANARY_NUMBER
    assert full["body"]["data"]["patient_ref"] is None
    assert ids_rx.bad_signatures == phi_rx.bad_signatures == 0


def test_mqtt_renders_consent_changed_with_phi_only_when_configured() -> None:
    event = OutboxEvent(
        "evt_1",
        7,
        "consent.changed",
        1.0,
        "cns_1",
        "pharmacy",
        {"consent_id": "cns_1", "program": "pharmacy", "scope": "all", "decision": "opt_out"},
        {"number": CANARY_NUMBER, "patient_ref": None},
    )
    assert event_topic("smsgw", event) == "smsgw/events/consent.changed"
    plain = json.loads(event_payload(event, phi=False))
    assert plain["data"]["decision"] == "opt_out" and "phi" not in plain
    assert json.loads(event_payload(event, phi=True))["phi"]["number"] == CANARY_NUMBER


async def test_the_document_describes_the_consent_endpoints(api: Api) -> None:
    spec = await (await api.get("/api/v1/openapi.json")).json()
    paths = spec["paths"]
    lookup = paths["/api/v1/optouts"]["get"]
    (number,) = lookup["parameters"]
    assert number["required"] is True and number["schema"]["format"] == "phone"
    assert lookup["security"] == [{"bearer": ["read"]}]
    assert paths["/api/v1/optouts"]["post"]["security"] == [{"bearer": ["consent"]}]
    assert "not_opted_out" in paths["/api/v1/optouts"]["delete"]["responses"]["404"]["description"]
    assert (
        "disclosure_required"
        in paths["/api/v1/consents"]["post"]["responses"]["422"]["description"]
    )
    body = paths["/api/v1/consents/import"]["post"]["requestBody"]["content"]
    assert list(body) == ["text/csv"]
    export = paths["/api/v1/consents/export"]["get"]["responses"]["200"]["content"]
    assert list(export) == ["text/csv"]
    schemas = spec["components"]["schemas"]
    assert schemas["OptOutRequest"]["properties"]["program"]["enum"] == ["*", "default", "pharmacy"]
    scope = re.compile(schemas["ConsentRequest"]["properties"]["scope"]["pattern"])
    assert scope.match("purpose:marketing") and scope.match("kind:clinical") and scope.match("all")
    assert not scope.match("purpose:compliance") and not scope.match("kind:compliance")
    served = {p for p in paths if p.startswith(("/api/v1/optouts", "/api/v1/consents"))}
    # Numbers never in a path (access logs keep paths): a review's id is the only parameter.
    assert {name for p in served for name in re.findall(r"\{(\w+)\}", p)} <= {"id"}


async def test_the_export_escapes_formulas_and_re_imports_as_written(api: Api) -> None:
    # A note someone typed that a spreadsheet would run (issue 15, point 8).
    body = 'Phone,Status,Notes\n+12025550149,opt-out,"=HYPERLINK(""http://x"",""y"")"\n'
    headers = {**api.auth(), "Content-Type": "text/csv"}
    r = await api.client.post("/api/v1/consents/import", data=body, headers=headers)
    assert (await r.json())["appended"] == 1
    r = await api.get("/api/v1/consents/export")
    exported = await r.text()
    (row,) = list(csv.DictReader(io.StringIO(exported)))
    assert row["note"] == "'" + '=HYPERLINK("http://x","y")'
    r = await api.client.post("/api/v1/consents/import", data=exported, headers=headers)
    report = await r.json()
    assert (report["appended"], report["unchanged"], report["failed"]) == (0, 1, 0), report
    header, *lines = list(csv.reader(io.StringIO(exported)))
    cols, _ = consent_csv.columns(header, consent_csv.Options())
    parsed = consent_csv.row(2, lines[0], cols, consent_csv.Options(), api.gw.clock.time())
    assert isinstance(parsed, consent_csv.Row)
    assert parsed.note == '=HYPERLINK("http://x","y")'  # read back as it was written
