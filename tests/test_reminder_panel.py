"""The panel's "Reminder rules" page over a real loopback socket: an admin creates,
edits (new version) and deactivates a rule (audited); an operator sees the rules and
previews due times for a sample appointment but may not change them; CSRF as on every
panel page."""

from __future__ import annotations

import re

from gateway.panel_users import Role
from gateway.usecases import Caller
from tests.admin_support import PanelClient
from tests.test_admin_pages import signed_in

RULE = {
    "name": "Evening before",
    "offset": "-1d",
    "delivery_time": "18:00",
    "template": "reminder",
    "purpose": "appointment",
    "priority": "",
    "services": "CARDIO, DERM",
    "variants": "a:3, b",
    "active": "on",
}


async def _rule_id(panel: PanelClient) -> str:
    page = await (await panel.client.get("/reminder-rules")).text()
    found = re.search(r'href="/reminder-rules/(rul_[0-9a-f]{16})"', page)
    assert found is not None, page
    return found[1]


async def test_admin_creates_edits_and_deactivates_a_rule(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.ADMIN)
    page = await (await panel.client.get("/reminder-rules")).text()
    assert 'href="/reminder-rules"' in page and "No reminder rule yet" in page
    assert (await panel.post("/reminder-rules", RULE)).status == 403  # no CSRF token
    r = await panel.post("/reminder-rules", RULE, token=token)
    assert r.status == 303 and r.headers["Location"] == "/reminder-rules?notice=saved"
    rid = await _rule_id(panel)
    page = await (await panel.client.get("/reminder-rules")).text()
    assert "CARDIO, DERM" in page and "Evening before" in page and " · a, b" in page
    r = await panel.post(f"/reminder-rules/{rid}", {**RULE, "offset": "-2h", "delivery_time": ""},
                         token=token)  # fmt: skip
    assert r.status == 303
    page = await (await panel.client.get(f"/reminder-rules/{rid}")).text()
    assert "version 2" in page and 'value="-2h"' in page and 'value="a:3, b:1"' in page
    r = await panel.post(f"/reminder-rules/{rid}/deactivate", {}, token=token)
    assert r.status == 303 and r.headers["Location"] == "/reminder-rules?notice=deactivated"
    rules = await panel.gw.reminder_rules.list_rules(_any_caller())
    assert [(r.version, r.spec.active, r.spec.lead) for r in rules] == [(3, False, "-2h")]
    actions = await panel.audit_actions()
    for action in ("reminder_rule_created", "reminder_rule_changed", "reminder_rule_deactivated"):
        assert action in actions


async def test_a_bad_rule_is_shown_back_with_the_reason(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.ADMIN)
    r = await panel.post("/reminder-rules", {**RULE, "offset": "+2h"}, token=token)
    page = await r.text()
    assert r.status == 422 and "Offset: write it as a negative count" in page
    assert 'value="Evening before"' in page  # the form keeps what was typed
    r = await panel.post("/reminder-rules", {**RULE, "variants": "a:x"}, token=token)
    assert r.status == 422 and "Variants: write them as name:weight" in await r.text()


async def test_operator_previews_due_times_but_cannot_change_rules(panel: PanelClient) -> None:
    admin = await signed_in(panel, Role.ADMIN)
    await panel.post("/reminder-rules", RULE, token=admin)
    two = {**RULE, "name": "Two hours", "offset": "-2h", "delivery_time": "", "services": ""}
    await panel.post("/reminder-rules", two, token=admin)
    await panel.client.post("/logout", data={"csrf": admin})
    token = await signed_in(panel, Role.OPERATOR)
    page = await (await panel.client.get("/reminder-rules")).text()
    assert "Show due times" in page and "Create rule" not in page and "Deactivate" not in page
    sample = {"start": "2030-03-10T15:00", "time_zone": "America/New_York", "service": "cardio"}
    r = await panel.post("/reminder-rules/preview", sample, token=token)
    page = await r.text()
    assert r.status == 200
    assert "2030-03-09T18:00:00-05:00" in page  # the evening before, EST, across the change
    assert "2030-03-10T13:00:00-04:00" in page  # two hours before, EDT
    r = await panel.post("/reminder-rules/preview", {**sample, "time_zone": "Mars/Base"},
                         token=token)  # fmt: skip
    assert r.status == 422 and "not an IANA time zone" in await r.text()
    assert (await panel.post("/reminder-rules", RULE, token=token)).status == 403


async def test_viewer_and_auditor_have_no_reminder_pages(panel: PanelClient) -> None:
    for role in (Role.VIEWER, Role.AUDITOR):
        await signed_in(panel, role)
        r = await panel.client.get("/reminder-rules", allow_redirects=False)
        assert r.status in (403, 404)
        await panel.client.post("/logout")


def _any_caller() -> Caller:
    return Caller("test", None, sees_all=True, may_send=False, may_read_phi=False)
