"""The aiohttp application: one endpoint table, one auth gate, one error shape.

`ENDPOINTS` is the single list of what the API serves. Registration, authentication
and the OpenAPI document are all derived from it, so a route cannot be added without a
scope decision and a description.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler

from gateway.admin import headers, panel
from gateway.api import handlers as h
from gateway.api.openapi import build_openapi
from gateway.api.views import InboundPage, MessagePage, MessageView
from gateway.app import Gateway
from gateway.demo import DemoInbound
from gateway.errors import ApiError
from gateway.intake import Accepted, BatchRequest, SendRequest
from gateway.logs import exception_summary
from gateway.store.quarantine import HeldUndecodable

log = structlog.get_logger("smsgw.api")


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    scope: str | None
    summary: str
    request: type | None = None
    response: type | None = None
    status: int = 200
    query: tuple[tuple[str, str], ...] = ()
    idempotent: bool = False


_LIST_QUERY = (
    ("status", "message state"),
    ("priority", "priority class"),
    ("route", "route name"),
    ("since", "created at or after (RFC 3339 or Unix seconds)"),
    ("until", "created before (RFC 3339 or Unix seconds)"),
    ("to", "exact recipient number (matched through the blind index)"),
    ("limit", "page size, 1-500, default 50"),
    ("cursor", "next_cursor of the previous page"),
)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "POST",
        "/api/v1/messages",
        h.send_message,
        "send",
        "Queue one message; 202 once it is durably stored",
        SendRequest,
        Accepted,
        202,
        idempotent=True,
    ),
    Endpoint(
        "POST",
        "/api/v1/messages/batch",
        h.send_batch,
        "send",
        "Queue many messages in one durable commit; per-item results",
        BatchRequest,
        None,
        202,
        idempotent=True,
    ),
    Endpoint(
        "GET",
        "/api/v1/messages",
        h.list_messages,
        "read",
        "List messages, newest first, with cursor paging",
        None,
        MessagePage,
        query=_LIST_QUERY,
    ),
    Endpoint(
        "GET",
        "/api/v1/messages/{id}",
        h.get_message,
        "read",
        "One message with its state history",
        None,
        MessageView,
    ),
    Endpoint(
        "DELETE",
        "/api/v1/messages/{id}",
        h.cancel_message,
        "send",
        "Cancel a message that is not yet sending",
    ),
    Endpoint(
        "GET",
        "/api/v1/inbound",
        h.list_inbound,
        "read",
        "Inbound messages, newest first",
        None,
        InboundPage,
        query=(("limit", "page size"), ("cursor", "next_cursor of the previous page")),
    ),
    Endpoint(
        "GET",
        "/api/v1/inbound/undecodable",
        h.undecodable_inbound,
        "read",
        "Inbound records no codec could read, held encrypted for an operator: count only",
        None,
        HeldUndecodable,
    ),
    Endpoint(
        "GET",
        "/api/v1/queue",
        h.get_queue,
        "read",
        "Queue depths per class, in-flight submits, oldest age",
    ),
    Endpoint(
        "GET",
        "/api/v1/routes",
        h.get_routes,
        "read",
        "Routes with health, rate, window and counters",
    ),
    Endpoint(
        "POST",
        "/api/v1/routes/{name}/pause",
        h.pause_route,
        "admin",
        "Stop dispatching to a route; its messages fail over or wait",
    ),
    Endpoint(
        "POST",
        "/api/v1/routes/{name}/resume",
        h.resume_route,
        "admin",
        "Dispatch to a paused (or auth-parked) route again",
    ),
    Endpoint(
        "GET",
        "/api/v1/healthz",
        h.healthz,
        None,
        "Liveness and readiness; no authentication, no PHI",
    ),
    Endpoint(
        "POST",
        "/api/v1/demo/inbound",
        h.demo_inbound,
        "admin",
        "Embedded default only: a simulated handset sends a message (via SMSC or modem)",
        DemoInbound,
        None,
        202,
    ),
    Endpoint(
        "POST",
        "/api/v1/demo/smsc/drop",
        h.demo_drop_smsc,
        "admin",
        "Embedded default only: cut the simulated carrier's SMPP links mid-window",
    ),
    Endpoint(
        "POST",
        "/api/v1/demo/modems/{index}/unplug",
        h.demo_unplug_modem,
        "admin",
        "Embedded default only: pull an emulated modem's USB plug",
    ),
    Endpoint(
        "POST",
        "/api/v1/demo/modems/{index}/replug",
        h.demo_replug_modem,
        "admin",
        "Embedded default only: plug an emulated modem back in",
    ),
    Endpoint("GET", "/api/v1/metrics", h.metrics, "read", "Prometheus metrics"),
    Endpoint("GET", "/api/v1/openapi.json", h.openapi_document, None, "This document"),
)


def _guard(endpoint: Endpoint) -> Handler:
    """Wrap a handler with the bearer-token check for its scope."""
    if endpoint.scope is None:
        return endpoint.handler
    scope = endpoint.scope

    async def guarded(request: web.Request) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, text = header.partition(" ")
        if scheme.lower() != "bearer" or not text:
            raise ApiError(
                401,
                "unauthenticated",
                "missing bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="smsgw"'},
            )
        token = await request.app[h.GATEWAY].tokens.verify(text.strip())
        if token is None:
            raise ApiError(
                401,
                "unauthenticated",
                "invalid or revoked token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if scope not in token.scopes and "admin" not in token.scopes:
            raise ApiError(403, "forbidden", f"this token lacks the {scope!r} scope")
        request[h.AUTH_RECORD] = token
        return await endpoint.handler(request)

    return guarded


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into the JSON error shape (headers: `gateway/admin/headers.py`)."""
    try:
        response = await handler(request)
    except ApiError as e:
        _count_rejection(request, e.code)
        response = h.json_response(e.body(), status=e.status, headers=e.headers)
    except web.HTTPException as e:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            e.status, "http_error"
        )
        _count_rejection(request, code)
        message = {404: "no such endpoint", 413: "the request body is too large"}.get(
            e.status, e.reason
        )
        headers = {k: v for k, v in e.headers.items() if k.lower() == "allow"}
        response = h.json_response(
            {"error": {"code": code, "message": message}}, status=e.status, headers=headers
        )
    except ConnectionResetError:
        # The client went away mid-request: nothing was stored and nobody will read
        # this answer, but returning one keeps aiohttp from logging an error.
        response = h.json_response(
            {"error": {"code": "client_closed", "message": "the client closed the connection"}},
            status=400,
        )
    except Exception as e:
        log.error(
            "unhandled_error",
            method=request.method,
            path=request.rel_url.path,
            error=exception_summary(e),
        )
        response = h.json_response(
            {"error": {"code": "internal", "message": "internal error; see the gateway log"}},
            status=500,
        )
    return response


def _count_rejection(request: web.Request, code: str) -> None:
    gw = request.app.get(h.GATEWAY)
    if gw is not None:
        gw.metrics.rejected.labels(code).inc()


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings (a `to=` filter is a phone number)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log.info(
            "http",
            method=request.method,
            path=request.rel_url.path,
            status=response.status,
            ms=round(time * 1000, 2),
        )


def build_app(gateway: Gateway) -> web.Application:
    app = web.Application(
        middlewares=[api_middleware],
        client_max_size=gateway.config.http.max_body_bytes,
    )
    app[h.GATEWAY] = gateway
    app[h.IDEMPOTENCY_LOCKS] = {}
    for endpoint in ENDPOINTS:
        app.router.add_route(endpoint.method, endpoint.path, _guard(endpoint))
    app[h.OPENAPI] = build_openapi(ENDPOINTS)
    headers.install(app)
    if gateway.config.admin.enabled:
        panel.install(app, gateway)
    return app


def runner_options(gateway: Gateway) -> dict[str, Any]:
    """AppRunner settings: no access log, or one that never logs query strings."""
    if gateway.config.http.access_log:
        return {"access_log_class": PathOnlyAccessLogger}
    return {"access_log": None}
