"""The panel's "Surveys" pages over a real loopback socket: an admin creates a survey
in the editor (and a new version), an operator sends it and reads the results (an SVG
bar per option, the live fragment) and exports the CSV (numbers only when ticked;
audited); a viewer sees none of it; CSRF as on every panel page."""

from __future__ import annotations

import csv
import io
import re

from gateway.panel_users import Role
from tests.admin_support import PanelClient
from tests.survey_rows import OTHER, WHO, text
from tests.test_admin_pages import signed_in

FORM = {
    "name": "Visit",
    "intro": "en: GH Clinic\nes: Clinica GH",
    "q0_kind": "choice",
    "q0_text": "en: How was it?\nes: Como fue?",
    "q0_options": "1 | Good | Buena\n2 | Bad | Mala",
    "q1_kind": "scale",
    "q1_text": "en: Rate us\nes: Califique",
    "q1_min": "1",
    "q1_max": "5",
    "q2_kind": "text",
    "q2_text": "en: Anything else?\nes: Algo mas?",
    "q2_max_length": "100",
    "thanks": "en: Thanks\nes: Gracias",
    "purpose": "informational",
    "priority": "normal",
    "timeout_minutes": "1440",
}


async def _survey_id(panel: PanelClient) -> str:
    page = await (await panel.client.get("/surveys")).text()
    found = re.search(r'href="/surveys/(svy_[0-9a-f]{16})"', page)
    assert found is not None, page
    return found[1]


async def test_create_send_watch_results_and_export(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.ADMIN)
    assert (await panel.post("/surveys", FORM)).status == 403  # no CSRF token
    bad = {**FORM, "q0_options": "1 | Good"}  # a label missing for es
    r = await panel.post("/surveys", bad, token=token)
    assert r.status == 422 and "key | label per language" in await r.text()
    r = await panel.post("/surveys", FORM, token=token)
    assert r.status == 303, await r.text()
    sid = await _survey_id(panel)
    page = await (await panel.client.get(f"/surveys/{sid}")).text()
    assert "Version 1" in page and "1 | Good | Buena" in page
    r = await panel.post(f"/surveys/{sid}", {**FORM, "name": "Visit v2"}, token=token)
    assert r.status == 303
    r = await panel.post(f"/surveys/{sid}/send", {"to": WHO, "language": "es"}, token=token)
    page = await r.text()
    assert r.status == 200 and 'id="sent"' in page and "Started: 1" in page
    assert (await panel.post(f"/surveys/{sid}/send", {"to": OTHER}, token=token)).status == 200
    await text(panel.gw, "mala")
    await text(panel.gw, "4", OTHER)  # not a choice: asked again
    live = await (await panel.client.get(f"/surveys/{sid}/results/live")).text()
    counts = re.findall(r'data-count="(\d+)"', live)
    assert counts[:2] == ["0", "1"]  # Good 0, Bad 1
    assert 'id="answered-0">1<' in live
    await text(panel.gw, "1", OTHER)
    live = await (await panel.client.get(f"/surveys/{sid}/results/live")).text()
    assert re.findall(r'data-count="(\d+)"', live)[:2] == ["1", "1"]
    page = await (await panel.client.get(f"/surveys/{sid}/results")).text()
    assert 'hx-trigger="every 2s"' in page and "<svg" in page and "555" not in page
    r = await panel.client.get(f"/surveys/{sid}/results.csv")
    rows = list(csv.reader(io.StringIO(await r.text())))
    assert r.status == 200 and "number" not in rows[0] and len(rows) == 3
    r = await panel.client.get(f"/surveys/{sid}/results.csv?include_numbers=on")
    rows = list(csv.reader(io.StringIO(await r.text())))
    assert rows[0][-1] == "number" and {row[-1] for row in rows[1:]} == {WHO, OTHER}
    actions = await panel.audit_actions()
    assert actions.count("survey_export") == 2 and "survey_sent" in actions


async def test_a_viewer_sees_no_survey_page(panel: PanelClient) -> None:
    await signed_in(panel, Role.VIEWER)
    for path in ("/surveys", "/surveys/svy_0000000000000000/results"):
        assert (await panel.client.get(path)).status == 403


async def test_an_operator_sends_but_does_not_edit(panel: PanelClient) -> None:
    admin = await signed_in(panel, Role.ADMIN)
    assert (await panel.post("/surveys", FORM, token=admin)).status == 303
    sid = await _survey_id(panel)
    token = await signed_in(panel, Role.OPERATOR)
    page = await (await panel.client.get(f"/surveys/{sid}")).text()
    assert "Send survey" in page and "Save new version" not in page
    assert (await panel.post(f"/surveys/{sid}", FORM, token=token)).status == 403
    r = await panel.post(f"/surveys/{sid}/send", {"to": WHO, "groups": "flu"}, token=token)
    assert r.status == 422 and "not both" in await r.text()
