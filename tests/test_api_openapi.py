"""Issue 10 point 23: the OpenAPI document says what the gateway answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.test_api import Api, _api, _error

MAX_BATCH = 7


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway(http={"max_batch": MAX_BATCH, "shutdown_grace": 1.0})
    async for a in _api(gw):
        yield a


async def _spec(api: Api) -> dict[str, Any]:
    spec: dict[str, Any] = await (await api.client.get("/api/v1/openapi.json")).json()
    return spec


def _params(op: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in op.get("parameters", [])}


async def test_the_document_describes_every_answer(api: Api) -> None:
    spec = await _spec(api)
    paths = spec["paths"]
    listing = paths["/api/v1/messages"]["get"]
    assert {"400", "401", "403"} <= set(listing["responses"])
    assert "invalid_query" in listing["responses"]["400"]["description"]
    params = _params(listing)
    assert params["limit"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 500,
        "default": 50,
    }
    assert set(params["status"]["schema"]["enum"]) >= {"queued", "sent", "cancelled"}
    assert params["priority"]["schema"]["enum"] == ["critical", "high", "normal", "bulk"]
    inbound = paths["/api/v1/inbound"]["get"]
    assert "invalid_query" in inbound["responses"]["400"]["description"]
    assert _params(inbound)["limit"]["schema"]["type"] == "integer"

    cancel = paths["/api/v1/messages/{id}"]["delete"]
    assert "not_cancellable" in cancel["responses"]["409"]["description"]
    assert "404" in cancel["responses"]
    assert _params(cancel)["id"]["schema"]["pattern"] == "^[0-9A-HJKMNP-TV-Z]{26}$"

    batch = paths["/api/v1/messages/batch"]["post"]
    assert "batch_too_large" in batch["responses"]["413"]["description"]
    assert "empty_batch" in batch["responses"]["422"]["description"]
    messages = spec["components"]["schemas"]["BatchRequest"]["properties"]["messages"]
    assert (messages["minItems"], messages["maxItems"]) == (1, MAX_BATCH)
    key = _params(batch)["Idempotency-Key"]["schema"]
    assert (key["minLength"], key["maxLength"]) == (1, 255)

    assert "503" in paths["/api/v1/healthz"]["get"]["responses"]
    for path in (
        "/api/v1/demo/inbound",
        "/api/v1/demo/smsc/drop",
        "/api/v1/demo/modems/{index}/unplug",
    ):
        assert "demo_off" in paths[path]["post"]["responses"]["404"]["description"]
    metrics = paths["/api/v1/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4"]
    send = paths["/api/v1/messages"]["post"]["responses"]["202"]
    assert send["links"]["GetMessage"]["parameters"] == {"id": "$response.body#/id"}


async def test_limit_outside_its_range_is_invalid_query(api: Api) -> None:
    for path in ("/api/v1/messages", "/api/v1/inbound"):
        for limit in ("0", "501", "-1", "abc", "2.5", "\uff11\uff10"):
            error = await _error(await api.get(f"{path}?limit={limit}"), 400, "invalid_query")
            assert error["field"] == "limit"
        assert (await api.get(f"{path}?limit=500")).status == 200


async def test_batch_is_not_a_message_id(api: Api) -> None:
    for method in ("GET", "DELETE"):
        resp = await api.client.request(method, "/api/v1/messages/batch", headers=api.auth())
        await _error(resp, 405, "method_not_allowed")
        assert resp.headers["Allow"] == "POST"
