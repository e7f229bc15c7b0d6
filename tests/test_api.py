"""The HTTP API over a real loopback socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from gateway.api.server import ENDPOINTS
from gateway.app import Gateway
from gateway.http_app import build_app, runner_options
from gateway.tokens import create_token
from tests.conftest import CANARY_BODY, CANARY_DIGITS, CANARY_NUMBER, GatewayFactory, state_of


@dataclass
class Api:
    gw: Gateway
    client: TestClient[Any, Any]
    token: str

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    async def post(
        self, path: str, data: Any, token: str | None = None, headers: dict[str, str] | None = None
    ) -> ClientResponse:
        body = data if isinstance(data, (bytes, str)) else json.dumps(data)
        return await self.client.post(
            path, data=body, headers={**self.auth(token), **(headers or {})}
        )

    async def get(self, path: str, token: str | None = None) -> ClientResponse:
        return await self.client.get(path, headers=self.auth(token))

    async def count(self) -> int:
        cur = await self.gw.store.reader.execute("SELECT count(*) FROM messages")
        return int((await cur.fetchone())[0])


async def start_client(gw: Gateway) -> TestClient[Any, Any]:
    """A client for the app served exactly as `smsgw run` serves it."""
    server = TestServer(build_app(gw))
    await server.start_server(**runner_options(gw))
    client = TestClient(server)
    await client.start_server()
    return client


async def _api(
    gw: Gateway, scopes: frozenset[str] = frozenset({"send", "read"})
) -> AsyncIterator[Api]:
    token = await create_token(gw.store, "test", scopes, gw.clock)
    client = await start_client(gw)
    try:
        yield Api(gw, client, token.text)
    finally:
        await client.close()


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway(
        http={"max_batch": 5, "max_body_bytes": 64 * 1024, "shutdown_grace": 1.0}
    )
    async for a in _api(gw):
        yield a


async def _error(resp: ClientResponse, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return dict(body["error"])


async def test_send_then_read_back(api: Api) -> None:
    resp = await api.post(
        "/api/v1/messages",
        {"to": "(202) 555-0147", "body": "hi", "priority": "high", "reference": "ord-1"},
    )
    assert resp.status == 202
    accepted = await resp.json()
    assert accepted == {
        "id": accepted["id"],
        "status": "queued",
        "priority": "high",
        "segments": 1,
        "encoding": "gsm7",
    }
    await api.gw.scheduler.run_until_idle()
    resp = await api.get(f"/api/v1/messages/{accepted['id']}")
    view = await resp.json()
    assert view["status"] == "sent"
    assert view["to_masked"] == "+120••••••47"
    assert view["reference"] == "ord-1"
    assert view["possible_duplicate"] is False
    assert [e["state"] for e in view["events"]] == ["queued", "sending", "sent"]
    assert view["carrier_ids"]
    assert view["route"] == "main"


async def test_every_error_is_json_with_a_code_and_stores_nothing(api: Api) -> None:
    cases: list[tuple[Any, int, str, str | None]] = [
        (b"{not json", 400, "bad_json", None),
        ({"to": CANARY_NUMBER, "body": "x", "colour": "red"}, 422, "unknown_field", None),
        ({"to": CANARY_NUMBER}, 422, "missing_field", "body"),
        ({"to": 12025550147, "body": "x"}, 422, "invalid_field", "to"),
        ({"to": "+1202555014", "body": "x"}, 422, "invalid_number", "to"),
        (
            {"to": CANARY_NUMBER, "body": "x", "priority": "urgent"},
            422,
            "invalid_field",
            "priority",
        ),
        ({"to": CANARY_NUMBER, "body": "x" * 1601}, 422, "body_too_long", "body"),
        ({"to": CANARY_NUMBER, "body": ""}, 422, "invalid_field", "body"),
        ({"to": CANARY_NUMBER, "body": "x", "route": "nowhere"}, 422, "unknown_route", "route"),
        (
            {"to": CANARY_NUMBER, "body": "x", "send_at": "2030-01-01T00:00:00"},
            422,
            "invalid_field",
            "send_at",
        ),
        (
            {"to": CANARY_NUMBER, "body": "x", "expires_at": "2001-01-01T00:00:00Z"},
            422,
            "invalid_field",
            "expires_at",
        ),
        ([1, 2], 422, "invalid_field", None),
        (b"x" * (65 * 1024), 413, "too_large", None),
    ]
    for data, status, code, field in cases:
        resp = await api.post("/api/v1/messages", data)
        error = await _error(resp, status, code)
        if field is not None:
            assert error.get("field") == field, (data, error)
        text = json.dumps(error)
        assert CANARY_DIGITS not in text
        assert CANARY_BODY not in text
    assert await api.count() == 0


async def test_batch_accepts_valid_items_and_reports_the_rest(api: Api) -> None:
    resp = await api.post(
        "/api/v1/messages/batch",
        {
            "messages": [
                {"to": CANARY_NUMBER, "body": "one"},
                {"to": "12", "body": "two"},
                {"to": CANARY_NUMBER, "body": "three", "priority": "bulk"},
            ]
        },
    )
    assert resp.status == 202
    result = await resp.json()
    assert (result["accepted"], result["rejected"]) == (2, 1)
    assert result["results"][1]["error"]["code"] == "invalid_number"
    assert result["results"][1]["error"]["field"] == "messages[1].to"
    assert result["results"][2]["priority"] == "bulk"
    assert await api.count() == 2


async def test_batch_limits(api: Api) -> None:
    too_many = {"messages": [{"to": CANARY_NUMBER, "body": "x"}] * 6}
    await _error(await api.post("/api/v1/messages/batch", too_many), 413, "batch_too_large")
    await _error(await api.post("/api/v1/messages/batch", {"messages": []}), 422, "empty_batch")
    bad = {"messages": [{"to": "1", "body": "x"}]}
    await _error(await api.post("/api/v1/messages/batch", bad), 422, "batch_rejected")
    nested = {"messages": [{"to": CANARY_NUMBER, "body": "x", "extra": 1}]}
    await _error(await api.post("/api/v1/messages/batch", nested), 422, "batch_rejected")
    assert await api.count() == 0


async def test_auth_and_scopes(api: Api) -> None:
    resp = await api.client.post("/api/v1/messages", data="{}")
    await _error(resp, 401, "unauthenticated")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    await _error(
        await api.post("/api/v1/messages", {}, token="smsgw_000000000000_" + "a" * 43),
        401,
        "unauthenticated",
    )
    reader = await create_token(api.gw.store, "r", frozenset({"read"}), api.gw.clock)
    resp = await api.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": "x"}, token=reader.text)
    await _error(resp, 403, "forbidden")
    assert (await api.get("/api/v1/queue", token=reader.text)).status == 200
    assert (await api.client.get("/api/v1/healthz")).status == 200
    assert await api.count() == 0


async def test_revoked_token_stops_working(api: Api) -> None:
    api.gw.tokens.forget()
    token = await create_token(api.gw.store, "t", frozenset({"read"}), api.gw.clock)
    assert (await api.get("/api/v1/queue", token=token.text)).status == 200
    assert await api.gw.store.api_tokens.revoke(token.id, api.gw.clock.time())
    api.gw.clock.advance(api.gw.config.http.token_cache_seconds + 0.1)
    await _error(await api.get("/api/v1/queue", token=token.text), 401, "unauthenticated")


async def test_idempotency_key_replays_and_conflicts(api: Api) -> None:
    body = {"to": CANARY_NUMBER, "body": "once"}
    key = {"Idempotency-Key": "order-77"}
    first = await api.post("/api/v1/messages", body, headers=key)
    again = await api.post("/api/v1/messages", body, headers=key)
    assert first.status == again.status == 202
    assert await first.json() == await again.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await api.count() == 1
    other = await api.post("/api/v1/messages", {**body, "body": "twice"}, headers=key)
    await _error(other, 409, "idempotency_conflict")
    # The key is per token: another client may use the same string.
    token2 = await create_token(api.gw.store, "b", frozenset({"send"}), api.gw.clock)
    assert (await api.post("/api/v1/messages", body, token=token2.text, headers=key)).status == 202
    assert await api.count() == 2


async def test_idempotency_survives_restart(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    async for a in _api(gw):
        first = await a.post(
            "/api/v1/messages",
            {"to": CANARY_NUMBER, "body": "x"},
            headers={"Idempotency-Key": "k1"},
        )
        token, first_body = a.token, await first.json()
    await gw.stop()
    gw2 = await open_gateway()
    client = await start_client(gw2)
    try:
        resp = await client.post(
            "/api/v1/messages",
            data=json.dumps({"to": CANARY_NUMBER, "body": "x"}),
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "k1"},
        )
        assert resp.status == 202
        assert await resp.json() == first_body
    finally:
        await client.close()


async def test_concurrent_requests_with_one_key_create_one_message(api: Api) -> None:
    body = {"to": CANARY_NUMBER, "body": "race"}
    resps = await asyncio.gather(
        *(api.post("/api/v1/messages", body, headers={"Idempotency-Key": "same"}) for _ in range(8))
    )
    assert [r.status for r in resps] == [202] * 8
    ids = {(await r.json())["id"] for r in resps}
    assert len(ids) == 1
    assert await api.count() == 1


async def test_cancel_before_sending_only(api: Api) -> None:
    mid = (await (await api.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": "x"})).json())[
        "id"
    ]
    resp = await api.client.delete(f"/api/v1/messages/{mid}", headers=api.auth())
    assert resp.status == 200
    assert (await resp.json())["status"] == "cancelled"
    await api.gw.scheduler.run_until_idle()
    assert await state_of(api.gw, mid) == "cancelled"
    mid2 = (await (await api.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": "y"})).json())[
        "id"
    ]
    await api.gw.scheduler.run_until_idle()
    resp = await api.client.delete(f"/api/v1/messages/{mid2}", headers=api.auth())
    await _error(resp, 409, "not_cancellable")
    resp = await api.client.delete("/api/v1/messages/nope", headers=api.auth())
    await _error(resp, 404, "not_found")


async def test_list_pages_with_cursor_and_filters(api: Api) -> None:
    phi = await create_token(api.gw.store, "p", frozenset({"send", "read", "phi"}), api.gw.clock)
    api.token = phi.text
    for i in range(7):
        await api.post(
            "/api/v1/messages",
            {
                "to": CANARY_NUMBER if i % 2 else "+12025550199",
                "body": f"m{i}",
                "priority": "bulk" if i < 3 else "normal",
            },
        )
    seen: list[str] = []
    cursor = None
    while True:
        q = "/api/v1/messages?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await (await api.get(q)).json()
        seen += [m["id"] for m in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 7
    assert seen == sorted(seen, reverse=True)
    bulk = await (await api.get("/api/v1/messages?priority=bulk")).json()
    assert len(bulk["messages"]) == 3
    by_number = await (await api.get(f"/api/v1/messages?to={CANARY_NUMBER}")).json()
    assert len(by_number["messages"]) == 3
    await _error(await api.get("/api/v1/messages?status=lost"), 400, "invalid_query")
    await _error(await api.get("/api/v1/messages?since=yesterday"), 400, "invalid_query")


async def test_possible_duplicate_is_reported(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    async for a in _api(gw):
        mid = (await (await a.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": "x"})).json())[
            "id"
        ]
        token = a.token
    await gw.store.claim(mid, "main", gw.clock.time())
    await gw.stop()
    gw2 = await open_gateway()
    client = await start_client(gw2)
    try:
        headers = {"Authorization": f"Bearer {token}"}
        view = await (await client.get(f"/api/v1/messages/{mid}", headers=headers)).json()
        assert view["possible_duplicate"] is True
        assert view["status"] == "queued"
        queue = await (await client.get("/api/v1/queue", headers=headers)).json()
        assert queue["possible_duplicates"] == 1
        assert queue["queued"]["normal"] == 1
    finally:
        await client.close()


async def test_queue_routes_health_metrics(api: Api) -> None:
    await api.post(
        "/api/v1/messages", {"to": CANARY_NUMBER, "body": CANARY_BODY, "priority": "critical"}
    )
    queue = await (await api.get("/api/v1/queue")).json()
    assert queue["queued"]["critical"] == 1
    routes = await (await api.get("/api/v1/routes")).json()
    assert routes["routes"][0]["name"] == "main"
    assert routes["routes"][0]["state"] == "up"
    health = await api.client.get("/api/v1/healthz")
    assert (await health.json())["status"] == "ok"
    await api.gw.scheduler.run_until_idle()
    metrics = await (await api.get("/api/v1/metrics")).text()
    assert 'smsgw_sends_total{outcome="sent",route="main"} 1.0' in metrics
    assert 'smsgw_messages_accepted_total{priority="critical"} 1.0' in metrics
    assert CANARY_DIGITS not in metrics
    assert "CANARY" not in metrics


async def test_shutdown_refuses_new_sends_with_503(api: Api) -> None:
    api.gw.accepting = False
    resp = await api.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": "x"})
    await _error(resp, 503, "shutting_down")
    assert resp.headers["Retry-After"]
    assert (await api.get("/api/v1/queue")).status == 200
    assert (await api.client.get("/api/v1/healthz")).status == 503


async def test_unknown_endpoint_and_method_are_json(api: Api) -> None:
    await _error(await api.get("/api/v1/nothing"), 404, "not_found")
    resp = await api.client.put("/api/v1/messages", headers=api.auth())
    await _error(resp, 405, "method_not_allowed")


async def test_openapi_describes_every_endpoint(api: Api) -> None:
    spec = await (await api.client.get("/api/v1/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    served = {
        (str(r.method), r.resource.canonical)
        for r in api.client.app.router.routes()
        if r.resource is not None
        and r.method != "HEAD"
        and r.resource.canonical.startswith("/api/")  # the panel's are in test_admin_routes
    }
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert served == described
    send = spec["paths"]["/api/v1/messages"]["post"]
    assert send["security"] == [{"bearer": ["send"]}]
    schema = spec["components"]["schemas"]["SendRequest"]
    assert set(schema["required"]) == {"to", "body"}
    assert schema["additionalProperties"] is False


def test_every_endpoint_declares_a_scope_or_is_public_on_purpose() -> None:
    public = {e.path for e in ENDPOINTS if e.scope is None}
    assert public == {"/api/v1/healthz", "/api/v1/openapi.json"}
    assert all(e.scope in ("send", "read", "admin", "consent") for e in ENDPOINTS if e.scope)


async def test_admin_can_pause_and_resume_a_route(api: Api) -> None:
    admin = await create_token(api.gw.store, "a", frozenset({"admin"}), api.gw.clock)
    resp = await api.post("/api/v1/routes/main/pause", {})
    await _error(resp, 403, "forbidden")
    resp = await api.post("/api/v1/routes/main/pause", {}, token=admin.text)
    assert (await resp.json())["state"] == "parked"
    mid = (await (await api.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": "x"})).json())[
        "id"
    ]
    await api.gw.scheduler.run_until_idle()
    assert await state_of(api.gw, mid) == "queued"
    await api.post("/api/v1/routes/main/resume", {}, token=admin.text)
    await api.gw.scheduler.run_until_idle()
    assert await state_of(api.gw, mid) == "sent"
    await _error(
        await api.post("/api/v1/routes/nope/pause", {}, token=admin.text), 404, "not_found"
    )
