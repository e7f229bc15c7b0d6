"""The panel's Links page over a real loopback socket: an admin creates a link (audited;
a destination off the allowlist refused with the reason, not the URL echoed), sees
its clicks people apart from bots; an operator sees the page but may not create."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.http_app import build_app, runner_options
from gateway.panel_users import Role
from gateway.usecases import Caller
from tests.admin_support import PanelClient
from tests.conftest import CANARY_NUMBER, FAST_PASSWORD_HASH, GatewayFactory, accept
from tests.test_admin_pages import signed_in
from tests.test_links import FLU, LINKS

ADMIN_CALLER = Caller("user:test", None, True, True, False, may_edit_templates=True)


@pytest.fixture
async def panel(open_gateway: GatewayFactory) -> AsyncIterator[PanelClient]:
    gw = await open_gateway(admin=FAST_PASSWORD_HASH, links=LINKS)
    server = TestServer(build_app(gw))
    await server.start_server(**runner_options(gw))
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    try:
        yield PanelClient(gw, client)
    finally:
        await client.close()


async def test_admin_creates_a_link_and_sees_its_clicks(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.ADMIN)
    page = await (await panel.client.get("/links")).text()
    assert 'href="/links"' in page and "No link yet" in page and 'action="/links"' in page
    form = {"name": "flu-clinic", "destination": FLU, "expires_on": "2031-01-31"}
    assert (await panel.post("/links", form)).status == 403  # no CSRF token
    r = await panel.post("/links", form, token=token)
    assert r.status == 303 and r.headers["Location"] == "/links?notice=created"
    assert "link_created" in await panel.audit_actions()
    links = panel.gw.links
    message_id = await accept(panel.gw, CANARY_NUMBER, "Flu: {link:flu-clinic}")
    stored = await panel.gw.store.records.message(message_id)
    assert stored is not None
    token_text = stored.body.open().rsplit("/", 1)[1]
    await links.follow(token_text, "GET", {"User-Agent": "Mozilla/5.0 (iPhone) Safari/604.1"})
    await links.follow(token_text, "GET", {"User-Agent": "Twitterbot/1.0"})
    page = await (await panel.client.get("/links?notice=created")).text()
    assert "The link was created" in page and "{link:flu-clinic}" in page
    assert "2031-02-01T00:00:00Z" in page
    row = page[page.index("<td>flu-clinic</td>") :].split("</tr>")[0]
    assert row.count("<td>1</td>") == 3  # one person, one human click, one bot


async def test_a_disallowed_destination_is_refused_on_the_page(panel: PanelClient) -> None:
    token = await signed_in(panel, Role.ADMIN)
    evil = "https://www.example-hospital.org@evil.example.net/phish"
    r = await panel.post("/links", {"name": "x", "destination": evil}, token=token)
    page = await r.text()
    assert r.status == 422
    assert "user name or password in the URL is not allowed" in page
    assert "No link yet" in page
    r = await panel.post("/links", {"name": "x", "destination": FLU, "expires_on": "soon"},
                         token=token)  # fmt: skip
    assert r.status == 422 and "a date (YYYY-MM-DD)" in await r.text()


async def test_an_operator_sees_links_but_may_not_create(panel: PanelClient) -> None:
    await panel.gw.links.create(ADMIN_CALLER, "flu-clinic", FLU, None)
    token = await signed_in(panel, Role.OPERATOR)
    page = await (await panel.client.get("/links")).text()
    assert "{link:flu-clinic}" in page and 'action="/links"' not in page
    r = await panel.post("/links", {"name": "other", "destination": FLU}, token=token)
    assert r.status == 403
    await signed_in(panel, Role.VIEWER)
    assert (await panel.client.get("/links", allow_redirects=False)).status == 403
