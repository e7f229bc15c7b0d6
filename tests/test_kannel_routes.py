"""The route-table test for the Kannel listener: everything it serves is declared in
`KANNEL_ENDPOINTS`, every route demands Kannel credentials mapped to a token, and every
answer carries the security headers (as `tests/test_admin_routes.py` does for the API
and the panel)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gateway.integrations.kannel_server import KANNEL_ENDPOINTS
from gateway.web.headers import CSP
from tests.conftest import GatewayFactory
from tests.test_admin_routes import canonical, served
from tests.test_kannel import messages, open_listener


@pytest.fixture
async def listener(
    open_gateway: GatewayFactory, tmp_path: Path
) -> AsyncIterator[tuple[TestServer, str]]:
    gw, server = await open_listener(open_gateway, tmp_path)
    yield server, f"http://127.0.0.1:{server.port}"
    await server.close()
    assert await messages(gw) == []  # nothing in this file may send


async def test_every_served_route_is_declared_in_the_table(
    listener: tuple[TestServer, str],
) -> None:
    server, _ = listener
    declared = {(e.method, canonical(e.path)) for e in KANNEL_ENDPOINTS}
    assert len(declared) == len(KANNEL_ENDPOINTS)
    assert {(m, p) for m, p, _ in served(server.app)} == declared
    assert all(e.auth == "kannel-user" and e.summary for e in KANNEL_ENDPOINTS)


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"username": "kannel-user"},
        {"username": "kannel-user", "password": "wrong"},
        {"username": "someone", "password": "kannel-pw"},
    ],
)
async def test_every_route_refuses_without_valid_credentials(
    listener: tuple[TestServer, str], credentials: dict[str, str]
) -> None:
    _, base = listener
    params = {"to": "+12025550123", "text": "hi"}
    async with aiohttp.ClientSession() as session:
        for e in KANNEL_ENDPOINTS:
            if e.method == "GET":
                request = session.get(base + e.path, params={**params, **credentials})
            else:
                headers = {f"X-Kannel-{k.title()}": v for k, v in {**params, **credentials}.items()}
                headers["Content-Type"] = "text/plain"
                request = session.post(base + e.path, headers=headers, data=b"hi")
            async with request as r:
                assert (r.status, await r.text()) == (403, "Authorization failed for sendsms")
                assert_security_headers(r.headers, e.path)


def assert_security_headers(h: Mapping[str, str], where: str) -> None:
    assert h.get("Content-Security-Policy") == CSP, where
    assert h.get("X-Content-Type-Options") == "nosniff", where
    assert h.get("X-Frame-Options") == "DENY", where
    assert h.get("Referrer-Policy") == "no-referrer", where
    assert h.get("Cache-Control") == "no-cache", where  # Kannel's own reply header


async def test_unknown_paths_and_methods_answer_as_kannel(
    listener: tuple[TestServer, str],
) -> None:
    _, base = listener
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/cgi-bin/sendota") as r:
            assert (r.status, await r.text()) == (404, "Unknown request.")
            assert_security_headers(r.headers, "404")
        for method in ("PUT", "DELETE", "PATCH", "HEAD"):
            async with session.request(method, base + "/cgi-bin/sendsms") as r:
                assert r.status == 400 and await r.read() == b"", method
