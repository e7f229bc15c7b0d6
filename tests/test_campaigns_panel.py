"""The panel's Campaigns and Compose pages over a real loopback socket: the live preview
counts recipients and what the policy would block, before anything is queued; a
campaign is created, started, its progress fragment polls until it is done, pause and
cancel work; compose sends to one number (audited) or starts a campaign for a group;
an emergency campaign shows its one-click stop; roles and CSRF as everywhere."""

from __future__ import annotations

import re

from gateway.campaigns.progress_cache import MAX_AGE
from gateway.panel_users import Role
from tests.admin_support import PanelClient
from tests.campaign_rows import add_contacts, campaign_messages, save_template
from tests.conftest import record_decision
from tests.test_admin_pages import signed_in

FORM = {
    "name": "Flu drive",
    "groups": "g1",
    "purpose": "informational",
    "priority": "",
    "source": "template",
    "template": "flu",
    "split": "A:1, B:1",
    "rate": "50",
}


def _count(page: str, element: str) -> str:
    found = re.search(rf'id="{element}">([^<]*)<', page)
    assert found is not None, page
    return found[1]


async def test_preview_create_start_progress_pause_and_cancel(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.OPERATOR)
    numbers = await add_contacts(panel.gw, 6)
    await record_decision(panel.gw, numbers[2], "opt_out", "all")
    await save_template(panel.gw)
    page = await (await panel.client.get("/campaigns")).text()
    assert 'href="/campaigns"' in page and "No campaign yet" in page
    page = await (await panel.client.get("/campaigns/new")).text()
    assert 'hx-post="/campaigns/preview"' in page and "Group g1" in page
    r = await panel.post("/campaigns/preview", FORM, token=token)
    assert r.status == 200
    preview = await r.text()
    assert _count(preview, "preview-recipients") == "6"
    assert _count(preview, "preview-blocked") == "1" and 'data-reason="opted_out"' in preview
    assert "GSM-7" in preview and 'data-variant="B"' in preview
    assert await panel.gw.store.reader.all("SELECT id FROM messages") == []

    assert (await panel.post("/campaigns", {**FORM, "then": "start"})).status == 403  # CSRF
    r = await panel.post("/campaigns", {**FORM, "then": "start"}, token=token)
    assert r.status == 303
    url = r.headers["Location"]
    cid = url.rsplit("/", 1)[1]
    page = await (await panel.client.get(url)).text()
    assert 'id="campaign-pause"' in page and f'hx-get="/campaigns/{cid}/progress"' in page
    runner = panel.gw.campaign_runner
    await runner.step()
    panel.clock.advance(MAX_AGE)  # the page's own count (of none) has aged: counted again
    fragment = await (await panel.client.get(f"{url}/progress")).text()
    assert 'data-count="queued">1<' in fragment  # one message's worth at the start
    r = await panel.post(f"{url}/pause", {}, token=token)
    assert r.status == 303 and r.headers["Location"].endswith("?notice=pause")
    panel.clock.advance(5.0)
    await runner.step()
    # Paused: nothing more than the first step's one message that may go (and, if the
    # opted-out contact came first in index order, its blocked one, which costs no token).
    made = await campaign_messages(panel.gw, cid)
    assert len([m for m in made if m["state"] != "blocked"]) == 1
    page = await (await panel.client.get(url)).text()
    assert 'id="campaign-resume"' in page and 'id="campaign-pause"' not in page
    await panel.post(f"{url}/resume", {}, token=token)
    await runner.step()
    panel.clock.advance(1.0)
    await runner.step()
    await panel.gw.scheduler.run_until_idle()
    fragment = await (await panel.client.get(f"{url}/progress")).text()
    assert 'data-state="finished"' in fragment and "hx-get" not in fragment  # stops polling
    assert 'data-count="sent">5<' in fragment and 'data-reason="opted_out"' in fragment
    r = await panel.post(f"{url}/cancel", {}, token=token)
    assert r.status == 409 and "cannot cancel" in await r.text()
    actions = await panel.audit_actions()
    assert {"campaign_created", "campaign_started", "campaign_paused"} <= set(actions)


async def test_compose_to_one_number_and_to_a_group(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.OPERATOR)
    await add_contacts(panel.gw, 3)
    one = {"recipient": "number", "to": "(202) 555-0188", "purpose": "informational",
           "source": "text", "text": "Open late on Thursday.", "priority": ""}  # fmt: skip
    preview = await (await panel.post("/campaigns/preview", one, token=token)).text()
    assert _count(preview, "preview-recipients") == "1"
    assert _count(preview, "preview-allowed") == "1" and "555" not in preview
    r = await panel.post("/compose", one, token=token)
    assert r.status == 200
    page = await r.text()
    assert "queued" in _count(page, "compose-sent") and "555-0188" not in page
    assert "message_composed" in await panel.audit_actions()
    bad = await panel.post("/compose", {**one, "text": "Your potassium is 6.9 mmol/L"},
                           token=token)  # fmt: skip
    assert bad.status == 422 and "template_result_value" not in (await bad.text())
    assert "mmol" not in _count(await bad.text(), "compose-problem")

    group = {**one, "recipient": "audience", "to": "", "groups": "g1"}
    r = await panel.post("/compose", group, token=token)
    assert r.status == 303 and r.headers["Location"].startswith("/campaigns/cmp_")
    page = await (await panel.client.get(r.headers["Location"])).text()
    assert "running" in _count(page, "campaign-state")


async def test_an_emergency_campaign_has_a_one_click_stop(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.ADMIN)
    await add_contacts(panel.gw, 2)
    form = {**FORM, "purpose": "emergency", "source": "text", "template": "",
            "text": "Clinic closed today: flooding.", "then": "start"}  # fmt: skip
    r = await panel.post("/campaigns", form, token=token)
    url = r.headers["Location"]
    page = await (await panel.client.get(url)).text()
    assert 'id="emergency-stop"' in page and "class critical" in page
    r = await panel.post(f"{url}/cancel", {}, token=token)
    assert r.status == 303
    page = await (await panel.client.get(url)).text()
    assert "cancelled" in _count(page, "campaign-state") and 'id="emergency-stop"' not in page


async def test_viewers_and_auditors_do_not_reach_campaigns(panel: PanelClient) -> None:
    await signed_in(panel, Role.VIEWER)
    for path in ("/campaigns", "/compose", "/campaigns/new"):
        assert (await panel.client.get(path, allow_redirects=False)).status == 403
