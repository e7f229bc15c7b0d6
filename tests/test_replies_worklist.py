"""The staff worklist (issue 13, points 6 and 7): `GET /api/v1/replies`,
`POST /api/v1/replies/{id}/resolve` resolved once under parallel requests (one atomic
UPDATE), errors in the standard shape, and the panel's Worklist page (masked number,
intent, appointment, resolve button), audited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drivers.base import InboundSms
from gateway.app import Gateway
from gateway.panel_users import Role
from gateway.tokens import create_token
from tests.admin_support import PanelClient
from tests.appointment_rows import book, reply_rows
from tests.conftest import CANARY_DIGITS, CANARY_NUMBER, GatewayFactory
from tests.test_admin_pages import MASKED, signed_in
from tests.test_api import Api, _api, _error


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway()
    async for a in _api(gw, frozenset({"read", "send"})):
        yield a


async def _reply(gw: Gateway, body: str, sender: str = CANARY_NUMBER) -> None:
    await gw.sink.inbound("main", InboundSms(sender=sender, body=body))


async def test_the_worklist_lists_open_replies_and_resolves_each_once(api: Api) -> None:
    booked = await book(api.gw, CANARY_NUMBER)
    await _reply(api.gw, "C")  # done: not for staff
    await _reply(api.gw, "R")  # a reschedule request, no write-back: open
    await _reply(api.gw, "Can't make it")  # unclear: open
    r = await api.get("/api/v1/replies?state=open")
    assert r.status == 200, await r.text()
    items = (await r.json())["items"]
    assert [(i["intent"], i["outcome"], i["appointment_id"]) for i in items] == [
        ("reschedule", "reschedule_requested", booked.id),
        ("unclear", "unclear", booked.id),
    ]
    assert all(i["number_masked"] and CANARY_DIGITS not in i["number_masked"] for i in items)
    assert CANARY_DIGITS not in await r.text() and "make it" not in await r.text()
    every = (await (await api.get("/api/v1/replies")).json())["items"]
    assert len(every) == 3

    target = items[0]["id"]
    answers = await asyncio.gather(
        *(
            api.post(f"/api/v1/replies/{target}/resolve", {"resolution": "handled"})
            for _ in range(8)
        )
    )
    statuses = sorted(a.status for a in answers)
    assert statuses == [200] + [409] * 7
    for a in answers:
        if a.status == 409:
            await _error(a, 409, "not_open")
        else:
            done = await a.json()
            assert (done["state"], done["resolution"]) == ("resolved", "handled")
            assert done["resolved_by"].startswith("token:")
    rows = {r["id"]: r["state"] for r in await reply_rows(api.gw)}
    assert rows[target] == "resolved"
    audit = [e.action for e in await api.gw.audit.entries(limit=100)]
    assert audit.count("appointment_reply_resolved") == 1
    open_now = (await (await api.get("/api/v1/replies?state=open")).json())["items"]
    assert [i["intent"] for i in open_now] == ["unclear"]


async def test_worklist_errors_are_json_and_never_echo_input(api: Api) -> None:
    await _error(await api.get("/api/v1/replies?state=weird"), 400, "invalid_query")
    await _error(await api.get("/api/v1/replies?limit=0"), 400, "invalid_query")
    await _error(await api.get("/api/v1/replies?color=1"), 400, "invalid_query")
    missing = "rpl_0123456789abcdef"
    await _error(await api.post(f"/api/v1/replies/{missing}/resolve", {}), 404, "not_found")
    await book(api.gw, CANARY_NUMBER)
    await _reply(api.gw, "N")
    (row,) = await reply_rows(api.gw)
    err = await _error(
        await api.post(f"/api/v1/replies/{row['id']}/resolve", {"resolution": "zzqx"}),
        422,
        "invalid_field",
    )
    assert "zzqx" not in err["message"] and err["field"] == "resolution"
    token = await _token(api, "read")
    r = await api.post(f"/api/v1/replies/{row['id']}/resolve", {}, token=token)
    await _error(r, 403, "forbidden")
    r = await api.post(f"/api/v1/replies/{row['id']}/resolve", b"")  # body optional
    assert r.status == 200 and (await r.json())["resolution"] == "handled"
    done = await api.post(f"/api/v1/replies/{row['id']}/resolve", b"")
    await _error(done, 409, "not_open")


async def _token(api: Api, *scopes: str) -> str:
    return (await create_token(api.gw.store, "t", frozenset(scopes), api.gw.clock)).text


async def test_the_panel_worklist_shows_masked_replies_and_resolves_them(
    panel: PanelClient,
) -> None:
    gw = panel.gw
    booked = await book(gw, CANARY_NUMBER)
    await gw.sink.inbound("main", InboundSms(sender=CANARY_NUMBER, body="R"))
    (row,) = await reply_rows(gw)
    token = await signed_in(panel, Role.OPERATOR)
    assert 'href="/worklist"' in await (await panel.client.get("/account")).text()
    r = await panel.client.get("/worklist")
    page = await r.text()
    assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
    assert MASKED in page and CANARY_DIGITS not in page
    assert row["id"] in page and booked.id in page and "reschedule requested" in page
    assert "Handled" in page and "Reveal text" in page
    detail = await (await panel.client.get(f"/appointments/{booked.id}")).text()
    assert row["id"] in detail and "reschedule requested" in detail  # its replies, too
    r = await panel.post(f"/worklist/{row['id']}", {"resolution": "handled"})
    assert r.status == 403  # no CSRF token
    r = await panel.post(f"/worklist/{row['id']}", {"resolution": "dismissed"}, token=token)
    assert r.status == 303 and r.headers["Location"] == "/worklist?notice=resolved"
    assert (await reply_rows(gw))[0]["state"] == "resolved"
    assert "Nothing on the worklist." in await (await panel.client.get("/worklist")).text()
    assert "appointment_reply_resolved" in await panel.audit_actions()
    r = await panel.post(f"/worklist/{row['id']}", {"resolution": "handled"}, token=token)
    assert r.status == 409


async def test_viewer_and_auditor_have_no_worklist(panel: PanelClient) -> None:
    for role in (Role.VIEWER, Role.AUDITOR):
        panel.client.session.cookie_jar.clear()
        await signed_in(panel, role)
        assert 'href="/worklist"' not in await (await panel.client.get("/account")).text()
        assert (await panel.client.get("/worklist")).status == 403
