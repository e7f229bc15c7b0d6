"""The panel's operational pages over a real loopback socket (no browser): masking,
reveal and its audit entry, role limits, cancel and retry, filters, routes, tokens, the
live event stream, and the origin check under `Referrer-Policy: no-referrer`."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from gateway.admin.dashboard import KEEPALIVE_SECONDS
from gateway.models import State
from gateway.panel_users import Role
from gateway.store.transitions import Transition
from tests.admin_support import PanelClient
from tests.conftest import CANARY_BODY, CANARY_DIGITS, CANARY_NUMBER, accept, state_of
from tests.store_rows import message_row

MASKED = "+1 202 ••• ••47"


async def signed_in(panel: PanelClient, role: Role) -> str:
    await panel.add_user(role.value, role)
    return await panel.login_ok(role.value)


async def reveal(panel: PanelClient, path: str, token: str) -> tuple[int, dict[str, object]]:
    r = await panel.post(path, headers={"X-CSRF-Token": token})
    return r.status, await r.json()


async def test_operator_sees_masked_numbers_and_reveal_is_audited(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.OPERATOR)
    mid = await accept(panel.gw, body=CANARY_BODY)
    for path in ("/messages", f"/messages/{mid}"):
        page = await (await panel.client.get(path)).text()
        assert MASKED in page
        assert CANARY_DIGITS not in page and "CANARY" not in page
    before = await panel.audit_actions()
    status, body = await reveal(panel, f"/messages/{mid}/reveal", token)
    assert status == 200
    assert body["to"] == CANARY_NUMBER and body["body"] == CANARY_BODY
    entries = await panel.gw.audit.entries(limit=5)
    newest = entries[0]
    assert (newest.action, newest.target_kind, newest.target_id) == ("reveal", "message", mid)
    assert CANARY_DIGITS not in newest.detail
    assert len(await panel.audit_actions()) == len(before) + 1
    r = await panel.post(
        f"/messages/{mid}/reveal", headers={"X-CSRF-Token": token, "HX-Request": "true"}
    )
    assert r.headers["Cache-Control"] == "no-store"
    assert 'data-phi="number">' + CANARY_NUMBER in await r.text()


async def test_viewer_and_auditor_never_see_phi_and_cannot_reveal(panel: PanelClient) -> None:
    mid = await accept(panel.gw, body=CANARY_BODY)
    for role in (Role.VIEWER, Role.AUDITOR):
        panel.client.session.cookie_jar.clear()
        token = await signed_in(panel, role)
        if role is Role.VIEWER:
            for path in ("/messages", f"/messages/{mid}", "/inbound", "/"):
                page = await (await panel.client.get(path)).text()
                assert "202 •••" not in page and CANARY_DIGITS not in page, path
        before = len(await panel.audit_actions())
        status, body = await reveal(panel, f"/messages/{mid}/reveal", token)
        assert status == 403 and body["error"]["code"] == "forbidden"  # type: ignore[index]
        assert len(await panel.audit_actions()) == before


async def test_number_search_uses_the_blind_index_and_filters_combine(
    panel: PanelClient,
) -> None:
    await signed_in(panel, Role.OPERATOR)
    mine = await accept(panel.gw, priority="critical", reference="lab-4711")
    other = await accept(panel.gw, to="+12025550123")
    page = await (await panel.client.get("/messages", params={"number": "(202) 555-0147"})).text()
    assert mine in page and other not in page
    page = await (await panel.client.get("/messages", params={"priority": "normal"})).text()
    assert other in page and mine not in page
    page = await (await panel.client.get("/messages", params={"reference": "lab-4711"})).text()
    assert mine in page and other not in page
    page = await (await panel.client.get("/messages", params={"state": "bogus"})).text()
    assert "Unknown state." in page


async def test_cancel_queued_and_retry_failed_are_audited(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.OPERATOR)
    gw = panel.gw
    mid = await accept(gw)
    r = await panel.post(f"/messages/{mid}/cancel", token=token)
    assert r.status == 303
    assert await state_of(gw, mid) == "cancelled"
    r = await panel.post(f"/messages/{mid}/cancel", token=token)
    assert r.status == 409
    failed = await accept(gw, body=CANARY_BODY)
    gw.scheduler.forget(failed)
    await gw.store.transition(Transition(failed, State.FAILED, error_code="test:x"), 0.0)
    r = await panel.post(f"/messages/{failed}/retry", token=token)
    assert r.status == 303
    new_id = r.headers["Location"].split("/")[2].split("?")[0]
    assert new_id != failed
    assert await state_of(gw, new_id) == "queued"
    row = await message_row(gw.store, new_id)
    assert row is not None and gw.store.decrypt(row["body_ct"], new_id, "body") == CANARY_BODY
    newest = (await gw.audit.entries(limit=1))[0]
    assert newest.action == "message_retried" and newest.target_id == failed
    assert json.loads(newest.detail) == {"new_message_id": new_id}
    assert "message_cancelled" in await panel.audit_actions()


async def test_pause_and_resume_a_route_from_the_panel(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.OPERATOR)
    r = await panel.post("/routes/main/pause", token=token)
    assert r.status == 303
    assert panel.gw.routes["main"].paused
    assert 'data-field="state">paused' in await (await panel.client.get("/routes")).text()
    await panel.post("/routes/main/resume", token=token)
    assert not panel.gw.routes["main"].paused
    actions = await panel.audit_actions()
    assert actions[-2:] == ["route_paused", "route_resumed"]
    assert (await panel.post("/routes/nowhere/pause", token=token)).status == 404
    r = await panel.post("/routes/main/drain", {"unit": "sim1"}, token=token)
    assert r.status == 409 and (await r.json())["error"]["code"] == "not_drainable"


async def test_tokens_are_shown_once_and_revocable_by_admins_only(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.ADMIN)
    r = await panel.post(
        "/tokens",
        {"name": "lab", "scope": "send"},
        token=token,
    )
    assert r.status == 201
    page = await r.text()
    text = page.split('id="new-token">')[1].split("<")[0]
    assert text.startswith("smsgw_")
    assert await panel.gw.tokens.verify(text) is not None
    listing = await (await panel.client.get("/tokens")).text()
    assert text not in listing  # shown once
    token_id = text.split("_")[1]
    assert (await panel.post(f"/tokens/{token_id}/revoke", token=token)).status == 303
    assert await panel.gw.tokens.verify(text) is None
    assert (await panel.audit_actions())[-2:] == ["token_created", "token_revoked"]


async def test_events_stream_sends_a_snapshot_at_once(panel: PanelClient) -> None:
    await signed_in(panel, Role.VIEWER)
    await accept(panel.gw, priority="high")
    r = await panel.client.get("/events")
    assert r.headers["Content-Type"].startswith("text/event-stream")
    snap = json.loads(await _read_event(r, "snapshot"))
    assert snap["queue"]["classes"][1] == {
        "name": "high",
        "queued": 1,
        "scheduled": 0,
        "sending": 0,
    }
    r.close()


async def test_origin_null_is_judged_by_fetch_metadata(panel: PanelClient) -> None:
    """Under `Referrer-Policy: no-referrer` browsers send `Origin: null` on every POST."""
    token = await signed_in(panel, Role.ADMIN)
    same = {"Sec-Fetch-Site": "same-origin"}
    r = await panel.post("/audit/verify", token=token, origin="null", headers=same)
    assert r.status == 200
    for headers in ({}, {"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "cross-site"}):
        r = await panel.post("/audit/verify", token=token, origin="null", headers=headers)
        assert r.status == 403, headers
        assert (await r.json())["error"]["code"] == "csrf_origin"


def test_route_card_shows_modem_rows_and_drain_for_operators() -> None:
    from gateway.admin.render import environment
    from gateway.admin.route_cards import signal_cell

    card = {
        "name": "sims",
        "type": "modem",
        "state": "degraded",
        "detail": "1 of 2 modems ready",
        "paused": False,
        "throttled": False,
        "rate": None,
        "configured_rate": None,
        "window": 2,
        "in_flight": 1,
        "queued": 4,
        "scheduled": 2,
        "sending": 1,
        "counters": {"submitted": 9},
        "unit_columns": ["state", "signal"],
        "units": [
            {
                "name": "sim1",
                "cells": ["ready", signal_cell(21)],
                "extra": {"model": "E3372"},
                "drained": False,
            },
            {"name": "sim2", "cells": ["drained", None], "extra": {}, "drained": True},
        ],
        "drainable": True,
    }
    template = environment().get_template("_route_card.html")

    def url(name: str, **parts: str) -> str:
        return f"/{name}/{'/'.join(parts.values())}"

    page = re.sub(r">\s+<", "><", template.render(r=card, can_act=True, csrf_token="t", url=url))
    assert '<th scope="row">sim1</th><td data-col="state">ready</td>' in page
    assert '<span class="bars bars-4" aria-hidden="true">' in page
    assert "\u221271 dBm, excellent (4 of 4 bars)</td>" in page
    assert '<td data-col="state">drained</td><td data-col="signal">—</td>' in page
    assert "<dt>Queued</dt><dd>4</dd><dt>Scheduled</dt><dd>2</dd>" in page
    assert page.count('name="unit" value="sim') == 2
    assert "/route_drain/sims" in page and "/route_restore/sims" in page  # sim2 is drained
    assert "E3372" in page
    viewer = template.render(r=card, can_act=False, csrf_token="t", url=url)
    assert "Drain" not in viewer and "Pause" not in viewer


async def _read_event(r: Any, name: str) -> bytes:
    """Read the stream until an event called `name`; its data."""
    buffer = b""
    marker = b"event: " + name.encode() + b"\ndata: "
    while marker not in buffer or not buffer.split(marker, 1)[1].count(b"\n\n"):
        chunk = await asyncio.wait_for(r.content.readany(), 5)
        assert chunk, "the stream ended first"
        buffer += chunk
    return buffer.split(marker, 1)[1].split(b"\n\n")[0]


async def test_events_stream_ends_when_the_session_does(panel: PanelClient) -> None:
    """Idle: the stream itself does not keep the session alive."""
    await signed_in(panel, Role.VIEWER)
    r = await panel.client.get("/events")
    await _read_event(r, "snapshot")
    await panel.clock.wait_sleeping(2)  # the stream and the hub's poller
    panel.clock.advance(panel.gw.config.admin.idle_timeout)
    assert await _read_event(r, "logout") == b"{}"
    r.close()
    assert (await panel.client.get("/", allow_redirects=False)).headers["Location"] == "/login"


async def test_events_stream_ends_soon_after_a_sign_out_elsewhere(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.VIEWER)
    r = await panel.client.get("/events")
    await _read_event(r, "snapshot")
    other = PanelClient(panel.gw, panel.client)
    assert (await other.post("/logout", token=token)).status == 303
    await panel.clock.wait_sleeping(2)
    panel.clock.advance(KEEPALIVE_SECONDS)
    assert await _read_event(r, "logout") == b"{}"
    r.close()


# -- issue 10, point 22 ------------------------------------------------------------------

_ENDS_IN = re.compile(r'data-session-ends-in="([0-9.]+)" data-session-idle="([0-9.]+)"')


async def _ends_in(panel: PanelClient, path: str = "/account") -> float:
    found = _ENDS_IN.search(await (await panel.client.get(path)).text())
    assert found is not None, "the page does not say when the session ends"
    return float(found.group(1))


async def test_pages_say_when_the_session_ends_and_keepalive_moves_it(panel: PanelClient) -> None:
    idle = panel.gw.config.admin.idle_timeout
    token = await signed_in(panel, Role.VIEWER)
    panel.clock.advance(3)  # under TOUCH_EVERY: the stored last_seen stays where it was
    assert await _ends_in(panel) == idle - 3
    page = await (await panel.client.get("/")).text()
    assert 'id="idle-warning"' in page and "Stay signed in" in page
    panel.clock.advance(idle - 60)
    r = await panel.post("/session/keepalive", headers={"X-CSRF-Token": token})
    assert r.status == 200
    assert await r.json() == {"ends_in": idle, "idle": idle}
    # Past the deadline the session had before: it is still there.
    panel.clock.advance(idle - 1)
    assert (await panel.client.get("/account", allow_redirects=False)).status == 200
    actions = await panel.audit_actions()
    assert "session_timeout" not in actions


async def test_keepalive_needs_the_csrf_token_and_a_session(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.VIEWER)
    r = await panel.post("/session/keepalive", headers={"X-CSRF-Token": "forged"})
    assert r.status == 403 and (await r.json())["error"]["code"] == "csrf_token"
    panel.clock.advance(panel.gw.config.admin.idle_timeout)
    r = await panel.post("/session/keepalive", headers={"X-CSRF-Token": token})
    assert r.status == 401 and (await r.json())["error"]["code"] == "unauthenticated"


async def test_keepalive_never_passes_the_absolute_lifetime(panel: PanelClient) -> None:
    admin = panel.gw.config.admin
    token = await signed_in(panel, Role.VIEWER)
    step = admin.idle_timeout / 2
    elapsed = 0.0
    while elapsed + step < admin.absolute_lifetime - admin.idle_timeout / 4:
        panel.clock.advance(step)
        elapsed += step
        r = await panel.post("/session/keepalive", headers={"X-CSRF-Token": token})
        assert r.status == 200
    answer = await r.json()
    assert answer["ends_in"] == min(admin.idle_timeout, admin.absolute_lifetime - elapsed)


async def test_a_failed_sign_in_keeps_the_user_name_never_the_password(
    panel: PanelClient,
) -> None:
    await panel.add_user("olivia", Role.OPERATOR)
    r = await panel.login("olivia", "a wrong password of some length")
    assert r.status == 401
    page = await r.text()
    assert 'value="olivia"' in page
    assert "a wrong password of some length" not in page


async def test_audit_page_shows_names_and_readable_details(panel: PanelClient) -> None:
    victor = await panel.add_user("victor", Role.VIEWER)
    await signed_in(panel, Role.ADMIN)
    page = await (await panel.client.get("/audit")).text()
    row = next(r for r in page.split("<tr>") if "user created" in r and "victor" in r)
    assert f"user {victor.username}" in row  # the target by name
    assert "<dt>role</dt><dd>viewer</dd>" in row  # the detail, labelled
    assert "&#34;" not in page and "{" not in row  # no raw JSON anywhere
    login = next(r for r in page.split("<tr>") if ">login<" in r)
    assert ">admin <span" in login  # who: the user's name, with the id beside it
    assert "When (UTC)" not in page


async def test_dashboard_badge_says_why_no_message_is_accepted(panel: PanelClient) -> None:
    await signed_in(panel, Role.VIEWER)
    page = await (await panel.client.get("/")).text()
    assert ">Accepting messages</span>" in page
    await panel.gw.set_route_paused("main", paused=True, actor="test")
    page = await (await panel.client.get("/")).text()
    assert ">Not accepting messages: every route is paused</span>" in page


# -- issue 11, point 1 -------------------------------------------------------------------


async def test_parallel_cancels_from_the_panel_cancel_once(panel: PanelClient) -> None:
    """Check and cancel are one step: of many operators' clicks, one cancels."""
    token = await signed_in(panel, Role.OPERATOR)
    mid = await accept(panel.gw)
    resps = await asyncio.gather(
        *(panel.post(f"/messages/{mid}/cancel", token=token) for _ in range(10))
    )
    assert sorted(r.status for r in resps) == [303] + [409] * 9
    assert (await panel.audit_actions()).count("message_cancelled") == 1
    assert await state_of(panel.gw, mid) == "cancelled"
