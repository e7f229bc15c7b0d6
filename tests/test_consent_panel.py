"""Issue 12 point 7: the panel's consent pages over a real loopback socket: lookup,
an opt-out taken by phone (audited), the review queue of free-text revocations,
import with progress, export; roles and CSRF as on every panel page."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import sqlite3

import aiohttp

from drivers.base import InboundSms
from gateway.admin.views_consent import JOBS
from gateway.consent import ledger
from gateway.consent.purposes import DEFAULT_POLICIES, SCOPE_ALL, Purpose
from gateway.panel_users import Role
from tests.admin_support import PanelClient
from tests.conftest import CANARY_BODY, CANARY_DIGITS, CANARY_NUMBER
from tests.test_admin_pages import MASKED, signed_in

APPOINTMENT = DEFAULT_POLICIES[Purpose.APPOINTMENT]


async def _refusal(panel: PanelClient, number: str = CANARY_NUMBER) -> str | None:
    idx = panel.gw.store.blind_index(number)
    return await panel.gw.store.writer.run(  # type: ignore[no-any-return]
        lambda conn: ledger.standing(conn, idx, "default", APPOINTMENT).refusal(APPOINTMENT)
    )


async def test_operator_records_an_opt_out_by_phone_and_looks_it_up(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.OPERATOR)
    page = await (await panel.client.get("/consent")).text()
    assert 'href="/consent"' in page and "Record an opt-out" in page
    form = {"number": CANARY_NUMBER, "source": "phone", "scope": SCOPE_ALL, "program": "*"}
    r = await panel.post("/consent/optout", {**form, "note": "rang the clinic"})
    assert r.status == 403  # no CSRF token
    assert await _refusal(panel) is None
    r = await panel.post("/consent/optout", {**form, "note": "rang the clinic"}, token=token)
    assert r.status == 303 and r.headers["Location"] == "/consent?notice=recorded"
    assert await _refusal(panel) == "opted_out"
    newest = (await panel.gw.audit.entries(limit=1))[0]
    assert (newest.action, newest.actor) == ("consent_recorded", f"user:{newest.actor[5:]}")
    assert newest.actor.startswith("user:") and CANARY_DIGITS not in newest.detail

    r = await panel.post("/consent/lookup", {"number": "(202) 555-0147"}, token=token)
    page = await r.text()
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    assert MASKED in page and CANARY_DIGITS not in page
    assert "opted out" in page and "rang the clinic" in page and ">phone<" in page
    assert "consent_lookup" in await panel.audit_actions()
    r = await panel.post("/consent/lookup", {"number": "12"}, token=token)
    assert r.status == 422 and "not a valid phone number" in await r.text()


async def test_viewer_and_auditor_have_no_consent_pages(panel: PanelClient) -> None:
    for role in (Role.VIEWER, Role.AUDITOR):
        panel.client.session.cookie_jar.clear()
        token = await signed_in(panel, role)
        assert 'href="/consent"' not in await (await panel.client.get("/account")).text()
        assert (await panel.client.get("/consent")).status == 403
        r = await panel.post("/consent/optout", {"number": CANARY_NUMBER}, token=token)
        assert r.status == 403
    assert await _refusal(panel) is None


async def _queued_revocation(panel: PanelClient, number: str) -> str:
    """What the inbound consent step leaves for a free-text revocation: the inbound
    message, its opt-out (source `phrase`) and a review row."""
    gw = panel.gw
    await gw.sink.inbound("main", InboundSms(sender=number, body=CANARY_BODY))
    row = await gw.store.reader.one("SELECT id FROM inbound ORDER BY seq DESC LIMIT 1")
    assert row is not None
    inbound_id = str(row[0])
    idx = gw.store.blind_index(number)
    entry = ledger.Entry(
        idx, number, "opt_out", "kind:marketing", "default", "phrase", gw.clock.time(),
        inbound_id=inbound_id,
    )  # fmt: skip
    cipher = gw.store.cipher
    assert cipher is not None

    def job(conn: sqlite3.Connection) -> None:
        ledger.append(conn, cipher, entry)
        conn.execute(
            "INSERT INTO consent_review (id, inbound_id, contact_idx, program, reason,"
            " created_at) VALUES (?,?,?,?,?,?)",
            ("rev_" + inbound_id, inbound_id, idx, "default", "phrase", gw.clock.time()),
        )

    await gw.store.writer.run(job)
    return "rev_" + inbound_id


async def _marketing(panel: PanelClient, number: str) -> str:
    idx = panel.gw.store.blind_index(number)
    policy = DEFAULT_POLICIES[Purpose.MARKETING]
    return await panel.gw.store.writer.run(  # type: ignore[no-any-return]
        lambda conn: ledger.standing(conn, idx, "default", policy).latest
    )


async def test_review_queue_confirm_keeps_the_opt_out_correct_lifts_it(
    panel: PanelClient,
) -> None:
    token = await signed_in(panel, Role.OPERATOR)
    keep = await _queued_revocation(panel, CANARY_NUMBER)
    lift = await _queued_revocation(panel, "+12025550123")
    page = await (await panel.client.get("/consent/reviews")).text()
    assert keep in page and lift in page and MASKED in page
    assert "CANARY" not in page  # texts only through the audited reveal button
    r = await panel.post(f"/consent/reviews/{keep}", {"action": "confirm"}, token=token)
    assert r.status == 303
    answers = await asyncio.gather(
        *(
            panel.post(f"/consent/reviews/{lift}", {"action": "correct"}, token=token)
            for _ in range(6)
        )
    )
    assert sorted(a.status for a in answers) == [303] + [404] * 5  # resolved once
    assert await _marketing(panel, CANARY_NUMBER) == "out"
    assert await _marketing(panel, "+12025550123") == "in"
    rows = await panel.gw.store.reader.all(
        "SELECT decision, source, actor, inbound_id FROM consent_ledger ORDER BY seq"
    )
    corrected = rows[-1]
    assert (corrected[0], corrected[1]) == ("opt_in", "review")
    assert corrected[2].startswith("user:") and corrected[3] == lift.removeprefix("rev_")
    assert len(rows) == 3
    page = await (await panel.client.get("/consent/reviews")).text()
    assert "Nothing to review." in page
    assert (await panel.audit_actions()).count("consent_review_resolved") == 2


def _upload(text: str, **fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in fields.items():
        data.add_field(name, value)
    data.add_field("file", text.encode(), filename="list.csv", content_type="text/csv")
    return data


async def test_import_upload_runs_in_the_background_with_progress(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.OPERATOR)
    text = "Mobile,Status\n" + "".join(f"+1202555{i:04d},opt_out\n" for i in range(1500))
    text += f"{CANARY_DIGITS}77,opt_out\n"
    r = await panel.client.post(
        "/consent/import",
        data=_upload(text, map="number=Mobile"),
        headers={"X-CSRF-Token": token, "HX-Request": "true", "Origin": panel.origin},
    )
    assert r.status == 204, await r.text()
    location = r.headers["HX-Redirect"]
    job = panel.client.app[JOBS][location.rsplit("/", 1)[1]]  # type: ignore[index]
    page = await (await panel.client.get(location)).text()
    assert "<progress" in page
    assert job.task is not None
    await asyncio.wait_for(job.task, 30)
    fragment = await (await panel.client.get(location + "/progress")).text()
    assert "Done." in fragment and 'id="import-appended">1500<' in fragment
    assert "hx-trigger" not in fragment  # polling stops
    assert '<td data-label="Line">1502</td><td data-label="Code">invalid_number' in fragment
    assert CANARY_DIGITS not in fragment
    left = [n for n in os.listdir(panel.gw.config.data_dir) if n.startswith("consent-import-")]
    assert left == []  # the uploaded file is gone
    assert "consent_imported" in await panel.audit_actions()

    # Without a script the form posts its token as a field: a small list still works.
    r = await panel.client.post(
        "/consent/import",
        data=_upload("number,decision\n+12025559999,stop\n", csrf=token),
        headers={"Origin": panel.origin},
        allow_redirects=False,
    )
    assert r.status == 303
    job = panel.client.app[JOBS][r.headers["Location"].rsplit("/", 1)[1]]  # type: ignore[index]
    assert job.task is not None
    await asyncio.wait_for(job.task, 30)
    assert job.report.appended == 1


async def test_export_is_for_admins_and_audited(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.OPERATOR)
    await panel.post("/consent/optout", {"number": CANARY_NUMBER, "source": "email"}, token=token)
    assert (await panel.client.get("/consent/export")).status == 403
    panel.client.session.cookie_jar.clear()
    await signed_in(panel, Role.ADMIN)
    r = await panel.client.get("/consent/export")
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    (row,) = csv.DictReader(io.StringIO(await r.text()))
    assert (row["number"], row["source"], row["decision"]) == (CANARY_NUMBER, "email", "opt_out")
    assert "consent_exported" in await panel.audit_actions()
