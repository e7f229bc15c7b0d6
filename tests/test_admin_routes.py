"""THE route-table test: every route the app serves is declared in a table, guarded by
what the table says, carries the security headers, and (panel) refuses forged writes.
Plus role checks per route, CSRF variants, and cookies and HSTS over real TLS."""

from __future__ import annotations

import re
import ssl
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from aiohttp import TCPConnector, web
from aiohttp.test_utils import TestClient, TestServer

from gateway import tls
from gateway.admin.panel import PANEL, STATIC_ROUTE
from gateway.admin.routing import PanelRoute
from gateway.api.server import ENDPOINTS
from gateway.api.shaping import UNMATCHED
from gateway.http_app import build_app
from gateway.panel_users import Role
from gateway.web.headers import CSP
from tests.admin_support import PanelClient
from tests.conftest import FAST_PASSWORD_HASH, GatewayFactory

SAMPLES = {
    "user_id": "0123456789ab",
    "path": "favicon.svg",
    "name": "main",
    "route": "main",
    "id": "06H1X8ZQ0000000000000000AA",  # a well-formed message id (the API's pattern)
    "index": "0",  # an emulated modem's number (the demo routes take digits only)
    "language": "en",  # a template's language tag
    "version": "1",  # a template's version
    "rule_id": "rul_0123456789abcdef",  # a reminder rule's id (issue 13)
    "key": "0" * 32,  # a contact's key (issue 15)
    "job_id": "A" * 16,  # a contacts import job
    "group_id": "g" + "0" * 12,  # a contact group
    "audience_id": "a" + "0" * 12,  # a saved audience
    "survey_id": "svy_0123456789abcdef",  # a survey's id (issue 15, i15-surveys)
    "campaign_id": "cmp_0123456789abcdef",  # a campaign's id (issue 15)
    "link_id": "lnk_0123456789abcdef",  # a tracked link's id (issue 15)
    "group": "campaigns",  # an analytics dimension (issue 15)
}


def served(app: web.Application) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path pattern, info) of every route aiohttp will answer, HEAD aside, and
    the catch-all that answers what no route matches (404/405, `api/shaping.py`) aside."""
    out = []
    for r in app.router.routes():
        assert r.resource is not None
        if r.method == "HEAD" or r.resource.name == UNMATCHED:
            continue
        out.append((r.method, r.resource.canonical, r.resource.get_info()))
    return out


def canonical(path: str) -> str:
    """A declared path as aiohttp reports it: `{name:regex}` becomes `{name}`."""
    return re.sub(r"\{(\w+):(?:[^{}]|\{[^{}]*\})*\}", r"{\1}", path)


def concrete(info: dict[str, Any]) -> str:
    if "path" in info:
        return str(info["path"])
    return str(info["formatter"]).format_map(defaultdict(lambda: "x", SAMPLES))


def sample(path: str) -> str:
    """A declared path with every `{part}` filled from SAMPLES."""
    return canonical(path).format_map(defaultdict(lambda: "x", SAMPLES))


def panel_routes(panel: PanelClient) -> tuple[PanelRoute, ...]:
    return (*panel.client.app[PANEL].routes, STATIC_ROUTE)  # type: ignore[index]


def test_panel_routes_are_exposed_as_one_table() -> None:
    from gateway.admin import panel as panel_module

    table = panel_module.PANEL_ROUTES
    assert STATIC_ROUTE in table
    assert {r.name for r in table} >= {"login", "logout", "users", "audit", "audit_verify"}
    assert len({r.name for r in table}) == len(table)
    assert len({(r.method, r.path) for r in table}) == len(table)
    assert [r.name for r in table if r.public] == ["login", "login_submit", "static"]
    with pytest.raises(ValueError, match="PHI"):
        PanelRoute("GET", "/x", table[0].handler, frozenset({Role.VIEWER}), True, "x")


async def test_every_served_route_is_declared_in_a_table(panel: PanelClient) -> None:
    app = panel.client.app
    assert app is not None
    api = {(e.method, canonical(e.path)) for e in ENDPOINTS}
    pages = {(r.method, canonical(r.path)) for r in panel_routes(panel)}
    assert not api & pages
    serving = {(m, p) for m, p, _ in served(app)}
    assert serving == api | pages
    for r in app.router.routes():  # HEAD only ever mirrors a declared GET
        assert r.resource is not None
        if r.method == "HEAD":
            assert ("GET", r.resource.canonical) in serving


async def test_every_route_requires_auth_unless_declared_public(panel: PanelClient) -> None:
    app = panel.client.app
    assert app is not None
    api_public = {e.path for e in ENDPOINTS if e.scope is None}
    panel_by_key = {(r.method, canonical(r.path)): r for r in panel_routes(panel)}
    token = await panel.csrf("/login")  # valid pre-session CSRF: only auth may refuse
    for method, pattern, info in served(app):
        path = concrete(info)
        route = panel_by_key.get((method, pattern))
        if route is None:  # the API
            r = await panel.client.request(method, path, allow_redirects=False)
            if pattern in api_public:
                assert r.status == 200, pattern
            else:
                assert r.status == 401, f"{method} {pattern}"
                assert (await r.json())["error"]["code"] == "unauthenticated"
            continue
        if route.public:
            continue
        if method == "GET":
            r = await panel.client.get(path, allow_redirects=False)
            assert r.status == 303 and r.headers["Location"] == "/login", pattern
        else:
            r = await panel.post(path, token=token)
            assert r.status == 401, f"{method} {pattern}"
            assert (await r.json())["error"]["code"] == "unauthenticated"


def assert_security_headers(r: Any, where: str, *, tls_on: bool = False) -> None:
    h = r.headers
    assert h.get("Content-Security-Policy") == CSP, where
    assert "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP
    assert h.get("X-Content-Type-Options") == "nosniff", where
    assert h.get("Referrer-Policy") == "no-referrer", where
    assert h.get("X-Frame-Options") == "DENY", where
    assert ("Strict-Transport-Security" in h) is tls_on, where
    if h.get("Content-Type", "").startswith("text/"):
        assert "charset=utf-8" in h["Content-Type"], where


async def test_every_route_carries_the_security_headers(panel: PanelClient) -> None:
    app = panel.client.app
    assert app is not None
    await panel.add_user("root")
    routes = served(app)
    for method, pattern, info in routes:  # signed out: answers and refusals alike
        r = await panel.client.request(method, concrete(info), allow_redirects=False)
        assert_security_headers(r, f"{method} {pattern}")
    await panel.login_ok("root")
    for route in panel_routes(panel):  # signed in as admin: every page
        if route.method != "GET":
            continue
        path = sample(route.path)
        r = await panel.client.get(path, allow_redirects=False)
        assert_security_headers(r, f"GET {route.path}")
        # A page about one thing (a message) answers 404 for a sample id.
        assert r.status in (200, 303) or ("{" in route.path and r.status == 404), route.path
        if route is not STATIC_ROUTE:
            assert r.headers["Cache-Control"] == "no-store", route.path
    r = await panel.client.get("/no/such/page")
    assert r.status == 404
    assert_security_headers(r, "404")


async def test_non_get_panel_routes_refuse_requests_without_csrf(panel: PanelClient) -> None:
    await panel.add_user("root")
    token = await panel.login_ok("root")
    before = len(await panel.gw.audit.entries(limit=1000))
    foreign = "http://evil.example"
    for route in panel_routes(panel):
        if not route.state_changing:
            continue
        path = sample(route.path)
        cases = {
            "no token": {"token": None},
            "wrong token": {"token": "x" * 43},
            "foreign origin": {"token": token, "origin": foreign},
            "no origin or referer": {"token": token, "origin": None},
            "cross-site fetch": {"token": token, "headers": {"Sec-Fetch-Site": "cross-site"}},
            "foreign referer": {
                "token": token,
                "origin": None,
                "headers": {"Referer": foreign + "/"},
            },
        }
        for case, kwargs in cases.items():
            r = await panel.post(path, {"username": "x", "role": "admin"}, **kwargs)  # type: ignore[arg-type]
            assert r.status == 403, f"{route.name}: {case}"
            body = await r.json()
            assert body["error"]["code"] in ("csrf_token", "csrf_origin"), case
    assert len(await panel.gw.audit.entries(limit=1000)) == before, "nothing happened"
    assert (await panel.client.get("/account", allow_redirects=False)).status == 200


async def test_csrf_accepts_a_same_origin_referer_and_the_header(panel: PanelClient) -> None:
    await panel.add_user("root")
    token = await panel.login_ok("root")
    r = await panel.post(
        "/audit/verify", origin=None, token=token, headers={"Referer": panel.origin + "/audit"}
    )
    assert r.status == 200
    r = await panel.post("/audit/verify", headers={"X-CSRF-Token": token})
    assert r.status == 200


async def test_csrf_refusal_is_a_page_for_browsers(panel: PanelClient) -> None:
    await panel.add_user("root")
    await panel.login_ok("root")
    r = await panel.post("/audit/verify", token="forged", headers={"Accept": "text/html"})
    assert r.status == 403
    assert r.headers["Content-Type"].startswith("text/html")
    assert 'data-code="csrf_token"' in await r.text()


async def test_login_form_needs_its_pre_session_token(panel: PanelClient) -> None:
    await panel.add_user("root")
    r = await panel.post("/login", {"username": "root", "password": "x" * 20})
    assert r.status == 403 and (await r.json())["error"]["code"] == "csrf_token"
    token = await panel.csrf("/login")
    r = await panel.post(
        "/login", {"username": "root", "password": "x" * 20}, token=token, origin=None
    )
    assert r.status == 403 and (await r.json())["error"]["code"] == "csrf_origin"


ROLE_CAN = {
    Role.ADMIN: {"users", "audit", "account"},
    Role.OPERATOR: {"account"},
    Role.VIEWER: {"account"},
    Role.AUDITOR: {"audit", "account"},
}


@pytest.mark.parametrize("role", list(Role))
async def test_roles_reach_only_their_routes(panel: PanelClient, role: Role) -> None:
    await panel.add_user("someone", role)
    token = await panel.login_ok("someone")
    for name in ("users", "audit", "account"):
        r = await panel.client.get(f"/{name}", allow_redirects=False)
        assert (r.status == 200) == (name in ROLE_CAN[role]), f"{role} GET /{name}"
        if r.status != 200:
            assert r.status == 403 and (await r.json())["error"]["code"] == "forbidden"
    for route in panel_routes(panel):
        if route.roles is None or role in route.roles or not route.state_changing:
            continue
        path = sample(route.path)
        r = await panel.post(path, {"username": "x", "role": "admin"}, token=token)
        assert r.status == 403, f"{role} {route.name}"
    assert [u.username for u in await panel.accounts.repo.users()] == ["someone"]


async def test_admin_manages_users(panel: PanelClient) -> None:
    root = await panel.add_user("root")
    token = await panel.login_ok("root")
    r = await panel.post(
        "/users",
        {"username": "vera", "role": "viewer", "password": "lantern over the quiet moor"},
        token=token,
    )
    assert r.status == 303
    r = await panel.post(
        "/users", {"username": "weak", "role": "viewer", "password": "short"}, token=token
    )
    assert r.status == 422
    users = {u.username: u for u in await panel.accounts.repo.users()}
    vera = users["vera"]
    assert vera.role is Role.VIEWER
    for action in ("role", "reset-totp", "end-sessions", "disable", "enable"):
        r = await panel.post(f"/users/{vera.id}/{action}", {"role": "auditor"}, token=token)
        assert r.status == 303, action
    r = await panel.post(f"/users/{root.id}/disable", token=token)
    assert r.status == 409, "an admin cannot lock themselves out"
    actions = await panel.audit_actions()
    for expected in ("user_created", "user_role_changed", "totp_reset", "sessions_ended"):
        assert expected in actions
    assert actions[-2:] == ["user_disabled", "user_enabled"]
    page = await (await panel.client.get("/users")).text()
    assert "vera" in page and "auditor" in page


async def test_static_files(panel: PanelClient) -> None:
    r = await panel.client.get("/static/favicon.svg")
    assert r.status == 200 and r.headers["Content-Type"].startswith("image/svg+xml")
    for bad in ("/static/../gateway/cli.py", "/static/%2e%2e/pyproject.toml", "/static/nope.js"):
        assert (await panel.client.get(bad)).status == 404, bad


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    tls.generate_self_signed(cert, key, ["localhost", "127.0.0.1"])
    assert key.stat().st_mode & 0o777 == 0o600
    return cert, key


async def test_over_tls_cookies_are_host_prefixed_and_secure_with_hsts(
    open_gateway: GatewayFactory, tls_pair: tuple[Path, Path]
) -> None:
    cert, key = tls_pair
    gw = await open_gateway(
        http={"tls_cert_file": str(cert), "tls_key_file": str(key)}, admin=FAST_PASSWORD_HASH
    )
    assert gw.config.tls_paths == (cert, key)
    server = TestServer(build_app(gw))
    await server.start_server(ssl=tls.server_context(cert, key))
    trust = ssl.create_default_context(cafile=str(cert))
    client = TestClient(server, connector=TCPConnector(ssl=trust))
    await client.start_server()
    try:
        p = PanelClient(gw, client)
        assert p.origin.startswith("https://")
        await p.add_user("root")
        r = await p.login("root")
        assert r.status == 303
        cookie = next(c for c in r.headers.getall("Set-Cookie") if "smsgw_session=" in c)
        assert cookie.startswith("__Host-smsgw_session=")
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Domain" not in cookie and "Path=/" in cookie
        assert_security_headers(r, "login over TLS", tls_on=True)
        assert r.headers["Strict-Transport-Security"].startswith("max-age=31536000")
        page = await client.get("/account", allow_redirects=False)
        assert page.status == 200
        api = await client.get("/api/v1/healthz")
        assert_security_headers(api, "API over TLS", tls_on=True)
    finally:
        await client.close()
