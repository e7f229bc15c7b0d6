"""The app without middleware (gateway/api/shaping.py): every answer still in the error
shape, what no route matches still answered as aiohttp's router would (404, or 405
naming the methods of that path), the request checks still first on every route."""

from __future__ import annotations

from collections import defaultdict

from aiohttp import ClientResponse

from gateway.admin.panel import PANEL
from gateway.api.server import ENDPOINTS
from gateway.api.shaping import UNMATCHED
from gateway.web.headers import SECURITY_HEADERS
from tests.admin_support import PanelClient


def _methods_by_path(panel: PanelClient) -> dict[str, set[str]]:
    """The methods each literal path is served with, from the two route tables."""
    found: dict[str, set[str]] = defaultdict(set)
    for e in ENDPOINTS:
        found[e.path].add(e.method)
    for r in panel.client.app[PANEL].routes:  # type: ignore[index]
        found[r.path].add(r.method)
    return {p: m for p, m in found.items() if "{" not in p}


async def _shaped(resp: ClientResponse, status: int, code: str) -> None:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    for name, value in SECURITY_HEADERS.items():
        assert resp.headers.get(name) == value, name


async def test_the_app_has_no_middleware_and_its_catch_all_is_last(panel: PanelClient) -> None:
    app = panel.client.app
    assert app is not None
    assert not app.middlewares  # each one adds two coroutine layers to every request
    resources = list(app.router.resources())
    assert resources[-1].name == UNMATCHED
    assert [r.name for r in resources].count(UNMATCHED) == 1


async def test_a_path_served_with_other_methods_is_405_naming_them(panel: PanelClient) -> None:
    by_path = _methods_by_path(panel)
    checked = 0
    for path in (
        "/api/v1/messages",
        "/api/v1/optouts",
        "/api/v1/contacts",
        "/login",
        "/api/v1/healthz",
    ):
        allowed = by_path[path]
        for method in ("PUT", "PATCH", "DELETE"):
            if method in allowed:
                continue
            resp = await panel.client.request(method, path)
            await _shaped(resp, 405, "method_not_allowed")
            assert set(resp.headers["Allow"].split(",")) == allowed, path
            checked += 1
    assert checked >= 8


async def test_what_no_route_serves_is_404_in_the_shape(panel: PanelClient) -> None:
    for method, path in (
        ("GET", "/api/v1/nothing"),
        ("POST", "/api/v1/messages/extra/part"),
        ("GET", "/no/such/page"),
    ):
        resp = await panel.client.request(method, path)
        await _shaped(resp, 404, "not_found")
        assert path not in await resp.text()  # the value sent is never echoed
