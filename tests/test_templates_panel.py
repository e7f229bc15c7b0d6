"""Issue 13 point 7: the panel's template pages over a real loopback socket: an A/B
test saved from the editor's form (audited, names kept), the preview fragment, and
the roles (admin edits, operator previews, viewer and auditor have no page)."""

from __future__ import annotations

from gateway.panel_users import Role
from gateway.usecases import Caller
from tests.admin_support import PanelClient
from tests.test_admin_pages import signed_in

READER = Caller.for_panel_user("user:test", reads_phi=False, acts=False)
FORM = {
    "name": "visit",
    "language": "en",
    "purpose": "appointment",
    "kind": "reminder",
    "variables": "clinic\nstart\nward: text 12",
    "body": "{clinic}: see you {start} on {ward}. Reply STOP to opt out",
    "body_b": "{clinic}: {start:long}, ward {ward}. Reply C to confirm, STOP to opt out",
    "share_b": "25",
}


async def test_an_admin_saves_an_ab_test_from_the_editor(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.ADMIN)
    r = await panel.post("/templates/save", FORM, token=token)
    assert r.status == 303 and r.headers["Location"] == "/templates/visit/en?notice=saved"
    versions = await panel.gw.templates.versions(READER, "visit")
    (saved,) = versions
    assert [(v.name, v.weight) for v in saved.draft.variants] == [("A", 75), ("B", 25)]
    assert saved.created_by.startswith("user:")
    assert "template_saved" in await panel.audit_actions()
    page = await (await panel.client.get(r.headers["Location"])).text()
    assert "Saved as a new version" in page and 'name="body_b"' in page
    # A refused save shows the rule and keeps what was typed.
    bad = {**FORM, "body_b": "{clinic}: cancer screening {start}. Reply STOP to opt out"}
    r = await panel.post("/templates/save", bad, token=token)
    text = await r.text()
    assert r.status == 422 and "Diagnosis:" in text and "cancer screening" in text
    assert len(await panel.gw.templates.versions(READER, "visit")) == 1


async def test_the_preview_fragment_shows_each_variant_and_the_lint(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.OPERATOR)
    r = await panel.post("/templates/preview", {**FORM, "body": "{clinic}: 5.8 mg"}, token=token)
    fragment = await r.text()
    assert r.status == 200
    assert fragment.count('class="preview-text"') == 2
    assert 'data-rule="result_value"' in fragment and "GSM-7" in fragment
    # An operator may look and preview but not save.
    r = await panel.post("/templates/save", FORM, token=token)
    assert r.status == 403
    page = await (await panel.client.get("/templates/reminder/en")).text()
    assert "Only an admin can save templates" in page


async def test_viewer_and_auditor_have_no_template_pages(panel: PanelClient) -> None:
    for role in (Role.VIEWER, Role.AUDITOR):
        await signed_in(panel, role)
        r = await panel.client.get("/templates", allow_redirects=False)
        assert r.status == 403, role
