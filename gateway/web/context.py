"""What every handler of the one aiohttp app shares: the gateway, and JSON answers."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from gateway.app import Gateway

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)
JSON_HEADERS = {"Content-Type": "application/json"}
_encode = msgspec.json.encode


def gateway_of(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=_encode(data),
        status=status,
        headers={**JSON_HEADERS, **headers} if headers else JSON_HEADERS,
    )
