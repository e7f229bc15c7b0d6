"""A read that starts after a commit sees it (issue 10, point 10).

Over a real HTTP server: a message just accepted (202) reads back at once while other
clients list messages, and a fresh panel sign-in's session is found on the next page,
while other sessions load pages. Both used to lose to one shared read connection whose
interleaved cursors kept an old WAL snapshot open.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from gateway.panel_users import Role
from tests.admin_support import PanelClient
from tests.conftest import CANARY_NUMBER, GatewayFactory
from tests.test_api import Api, _api

SENDS = 150
LISTERS = 8
SIGN_INS = 30


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway(http={"shutdown_grace": 1.0})
    async for a in _api(gw):
        yield a


async def _while_busy(
    load: Callable[[], Awaitable[None]], work: Callable[[], Awaitable[int]], clients: int
) -> int:
    """Run `work` while `clients` tasks repeat `load`; returns what `work` returned."""
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            await load()

    tasks = [asyncio.create_task(loop()) for _ in range(clients)]
    try:
        return await work()
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_accepted_message_reads_back_while_others_list(api: Api) -> None:
    async def list_messages() -> None:
        resp = await api.get("/api/v1/messages?limit=50")
        assert resp.status == 200
        await resp.read()

    async def send_and_read() -> int:
        missing = 0
        for i in range(SENDS):
            resp = await api.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": f"m{i}"})
            assert resp.status == 202
            message_id = (await resp.json())["id"]
            got = await api.get(f"/api/v1/messages/{message_id}")
            await got.read()
            missing += got.status == 404
        return missing

    assert await _while_busy(list_messages, send_and_read, LISTERS) == 0


def _browser(panel: PanelClient) -> PanelClient:
    """Another browser on the same server, with its own cookie jar."""
    return PanelClient(panel.gw, TestClient(panel.client.server))


async def test_fresh_sign_in_is_found_while_others_load_pages(panel: PanelClient) -> None:
    await panel.add_user("nurse", Role.VIEWER)
    await panel.login_ok("nurse")

    async def load_page() -> None:
        resp = await panel.client.get("/messages", allow_redirects=False)
        assert resp.status == 200
        await resp.read()

    async def sign_in_and_look() -> int:
        bounced = 0
        for _ in range(SIGN_INS):
            browser = _browser(panel)
            await browser.client.start_server()  # the server runs already: a session only
            try:
                signed_in = await browser.login("nurse")
                assert signed_in.status == 303
                resp = await browser.client.get("/", allow_redirects=False)
                await resp.read()
                bounced += resp.status != 200
            finally:
                await browser.client.session.close()
        return bounced

    assert await _while_busy(load_page, sign_in_and_look, LISTERS) == 0
