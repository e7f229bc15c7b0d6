"""`/api/v1/campaigns` over the real app on loopback: create, preview, start, progress,
pause/resume/cancel, scopes, audit, and bad input refused with a stable code that never
echoes what was sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from drivers.clock import FakeClock
from gateway.tokens import create_token
from tests.campaign_rows import add_contacts, campaign_messages, save_template
from tests.conftest import TEST_CONSENT, GatewayFactory, record_decision
from tests.test_api import Api, _api, _error

BASE = "/api/v1/campaigns"
CAMPAIGN = {
    "name": "Flu drive",
    "audience": {"groups": ["g1"]},
    "purpose": "informational",
    "template": "flu",
    "split": {"A": 1, "B": 1},
    "rate": 500,
}
CONSENT = {
    **TEST_CONSENT,
    "purposes": {**TEST_CONSENT["purposes"], "marketing": {"window": "", "caps": []}},
}


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway(consent=CONSENT, campaigns={"max_rate": 1000.0})
    await save_template(gw)
    async for a in _api(gw, frozenset({"admin"})):
        yield a


async def _create(api: Api, **fields: Any) -> dict[str, Any]:
    r = await api.post(BASE, {**CAMPAIGN, **fields})
    assert r.status == 201, await r.text()
    return dict(await r.json())


async def test_create_preview_start_progress_and_the_audit(api: Api, clock: FakeClock) -> None:
    numbers = await add_contacts(api.gw, 40)
    await record_decision(api.gw, numbers[0], "opt_out", "all")
    made = await _create(api)
    assert made["state"] == "draft" and made["priority"] == "bulk"
    assert made["split"] == {"A": 1, "B": 1} and made["has_text"] is False
    ask = {"audience": {"groups": ["g1"]}, "purpose": "informational", "template": "flu"}
    r = await api.post(f"{BASE}/preview", ask)
    assert r.status == 200, await r.text()
    seen = await r.json()
    assert (seen["audience_size"], seen["allowed"], seen["blocked"]) == (40, 39, {"opted_out": 1})
    assert [(t["variant"], t["encoding"], t["segments"]) for t in seen["texts"]] == [
        ("A", "gsm7", 1),
        ("B", "gsm7", 1),
    ]
    assert await api.count() == 0  # a preview queues nothing
    r = await api.post(f"{BASE}/{made['id']}/start", {})
    assert r.status == 200, await r.text()
    assert (await r.json())["campaign"]["state"] == "running"
    await api.gw.campaign_runner.step()
    clock.advance(1.0)
    await api.gw.campaign_runner.step()
    await api.gw.scheduler.run_until_idle()
    r = await api.get(f"{BASE}/{made['id']}")
    detail = await r.json()
    assert detail["campaign"]["state"] == "finished"
    totals = detail["progress"]["totals"]
    assert (totals["queued"], totals["sent"], totals["blocked"]) == (39, 39, {"opted_out": 1})
    assert detail["progress"]["handled"] == 40 and detail["progress"]["audience_size"] == 40
    variants = detail["progress"]["variants"]
    assert sum(v["queued"] for v in variants.values()) == 39
    listed = await (await api.get(BASE)).json()
    assert [c["id"] for c in listed["campaigns"]] == [made["id"]]
    actions = [e.action for e in await api.gw.audit.entries(limit=50)]
    assert "campaign_created" in actions and "campaign_started" in actions
    assert all(not str(e.detail).count("+1202") for e in await api.gw.audit.entries(limit=50))


async def test_pause_resume_cancel(api: Api, clock: FakeClock) -> None:
    await add_contacts(api.gw, 5)
    made = await _create(api, starts_at="2030-01-01T09:00:00+01:00")
    r = await api.post(f"{BASE}/{made['id']}/start", {})
    assert r.status == 200, await r.text()
    assert (await r.json())["campaign"]["state"] == "scheduled"
    r = await api.post(f"{BASE}/{made['id']}/pause", {})
    assert (await r.json())["changed"] is True
    r = await api.post(f"{BASE}/{made['id']}/pause", {})
    body = await r.json()
    assert body["changed"] is False and body["campaign"]["state"] == "paused"
    r = await api.post(f"{BASE}/{made['id']}/resume", {})
    assert (await r.json())["campaign"]["state"] == "scheduled"  # its start still ahead
    r = await api.post(f"{BASE}/{made['id']}/cancel", {})
    assert (await r.json())["campaign"]["state"] == "cancelled"
    await _error(await api.post(f"{BASE}/{made['id']}/resume", {}), 409, "invalid_state")
    await _error(await api.post(f"{BASE}/{made['id']}/start", {}), 409, "invalid_state")
    await _error(await api.get(f"{BASE}/cmp_0000000000000000"), 404, "not_found")
    assert await campaign_messages(api.gw, made["id"]) == []


async def test_bad_input_is_refused_with_a_stable_code_and_no_echo(api: Api) -> None:
    await add_contacts(api.gw, 3)
    secret = "+12025550147 CANARY"
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        ({"template": "nope", "split": {}}, 422, "unknown_template", "template"),
        ({"split": {"Z": 1}}, 422, "unknown_variant", "split"),
        ({"starts_at": "2030-01-02T00:00:00Z", "ends_at": "2030-01-01T00:00:00Z"}, 422,
         "end_before_start", "ends_at"),
        ({"rate": 5000}, 422, "rate_too_high", "rate"),
        ({"text": "Hello"}, 422, "template_or_text", "template"),
        ({"template": None, "split": {}, "text": "You tested positive, call us"}, 422,
         "template_result_value", "text"),
        ({"purpose": "marketing", "priority": "critical"}, 422, "priority_not_allowed",
         "priority"),
        ({"purpose": "compliance"}, 422, "invalid_field", "purpose"),
        ({"template": None, "split": {}, "text": "Hi", "variables": {"clinic": "North"}}, 422,
         "invalid_field", "variables"),
        ({"name": secret * 10}, 422, "invalid_field", "name"),
        ({"split": {secret: 1}}, 422, "invalid_field", "split"),
        ({"variables": {"clinic": secret * 20}}, 422, "invalid_field", "variables"),
        ({"audience": {"groups": [secret]}}, 422, "invalid_field", "audience.groups[0]"),
        ({"surprise": 1}, 422, "unknown_field", None),
    ]  # fmt: skip
    for fields, status, code, field in cases:
        r = await api.post(BASE, {**CAMPAIGN, **fields})
        error = await _error(r, status, code)
        assert error.get("field") == field, (fields, error)
        assert "+1202" not in error["message"] and "CANARY" not in error["message"]
        assert "positive" not in error["message"]
    assert (await (await api.get(BASE)).json())["campaigns"] == []


async def test_a_start_with_no_consenting_recipient_is_refused(api: Api) -> None:
    await add_contacts(api.gw, 4)
    made = await _create(api, purpose="marketing", template=None, split={},
                         text="Our new wellness classes start Monday.")  # fmt: skip
    error = await _error(await api.post(f"{BASE}/{made['id']}/start", {}), 422,
                         "no_consenting_recipients")  # fmt: skip
    assert "no_consent: 4" in error["message"]
    r = await api.get(f"{BASE}/{made['id']}")
    assert (await r.json())["campaign"]["state"] == "draft"


async def test_scopes(api: Api) -> None:
    reader = await create_token(api.gw.store, "reader", frozenset({"read"}), api.gw.clock)
    sender = await create_token(api.gw.store, "sender", frozenset({"send"}), api.gw.clock)
    await _error(await api.post(BASE, CAMPAIGN, token=reader.text), 403, "forbidden")
    await _error(await api.post(BASE, CAMPAIGN, token=sender.text), 403, "forbidden")
    made = await _create(api)
    r = await api.get(f"{BASE}/{made['id']}", token=reader.text)
    assert r.status == 200
    for action in ("start", "pause", "resume", "cancel"):
        r = await api.post(f"{BASE}/{made['id']}/{action}", {}, token=reader.text)
        await _error(r, 403, "forbidden")
    r = await api.post(f"{BASE}/preview", {"to": "+12025550100", "purpose": "informational",
                                            "text": "Hi"}, token=reader.text)  # fmt: skip
    assert r.status == 200 and (await r.json())["allowed"] == 1


async def test_the_preview_says_how_many_would_wait_for_quiet_hours(
    open_gateway: GatewayFactory,
) -> None:
    """Issue 15's walkthrough: at 03:00 in the recipients' zone every informational text
    would wait for the morning; the preview says so (allowed, but waiting) before
    anything is queued."""
    windowed = {**TEST_CONSENT, "purposes": {"informational": {"window": "08:00-20:00"}}}
    gw = await open_gateway(consent=windowed, campaigns={"max_rate": 1000.0})
    await save_template(gw)
    await add_contacts(gw, 5)
    async for api in _api(gw, frozenset({"admin"})):
        ask = {"audience": {"groups": ["g1"]}, "purpose": "informational", "template": "flu"}
        r = await api.post(f"{BASE}/preview", ask)
        assert r.status == 200, await r.text()
        seen = await r.json()
        assert (seen["allowed"], seen["blocked"], seen["waiting"]) == (5, {}, {"quiet_hours": 5})
        assert await api.count() == 0
