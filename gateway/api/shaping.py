"""Every answer in the JSON error shape, and the request checks first, without middleware.

As soon as an aiohttp application has one middleware, aiohttp wraps every handler in
two more layers resumed on every request: its own `_fix_request_current_app` and the
middleware's coroutine (with `current_app` set and read, and the wrapped handler looked
up by the application's hash): about 10 of the 168 Python frames one send entered. So
the application has none. Each route's handler is wrapped instead: `shaped` runs the
checks every request passes first (`web.guard.request_check`: Host, path, proxy) and
turns whatever the handler raises into the error shape; the API's token check shares
that one coroutine (`server._guard`). A catch-all route, added last, answers what no
route matches as the router would have (404, or 405 with `Allow`), in the same shape.
"""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import request_scope
from gateway.errors import ApiError
from gateway.logs import exception_summary
from gateway.store_failure import KeyRetired, database_unreachable, storage_failure
from gateway.web.context import GATEWAY, json_response
from gateway.web.guard import RequestCheck

log = structlog.get_logger("smsgw.api")

STORE_UNAVAILABLE = {
    "error": {"code": "store_unavailable", "message": "the store could not commit; try again"}
}
KEY_RETIRED = {
    "error": {
        "code": "key_retired",
        "message": "this node's field key was retired while it was cut off from the database;"
        " it has taken the current key up: nothing was stored, try again",
    }
}
# A failover (S8) takes seconds: the client's retry then likely meets the new primary.
DATABASE_RETRY_AFTER = "2"
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
_HTTP_MESSAGES = {404: "no such endpoint", 413: "the request body is too large"}


def error_answer(request: web.Request, e: Exception) -> web.StreamResponse:
    """The answer to a request whose handling raised `e` (headers: `web/headers.py`)."""
    if isinstance(e, ApiError):
        _count_rejection(request, e.code)
        return json_response(e.body(), status=e.status, headers=e.headers)
    if isinstance(e, web.HTTPException):
        code = _HTTP_CODES.get(e.status, "http_error")
        _count_rejection(request, code)
        message = _HTTP_MESSAGES.get(e.status, e.reason)
        headers = {k: v for k, v in e.headers.items() if k.lower() == "allow"}
        return json_response(
            {"error": {"code": code, "message": message}}, status=e.status, headers=headers
        )
    if isinstance(e, ConnectionResetError):
        # The client went away mid-request: nothing was stored and nobody will read
        # this answer, but returning one keeps aiohttp from logging an error.
        return json_response(
            {"error": {"code": "client_closed", "message": "the client closed the connection"}},
            status=400,
        )
    if (why := storage_failure(e)) is not None:  # disk full: nothing was changed
        _count_rejection(request, "store_unavailable")
        log.error("store_unavailable", path=request.rel_url.path, reason=why)
        return json_response(STORE_UNAVAILABLE, status=503)
    if (why := database_unreachable(e)) is not None:  # the shared database is away
        _count_rejection(request, "store_unavailable")
        log.warning("store_unavailable", path=request.rel_url.path, reason=why)
        return json_response(
            STORE_UNAVAILABLE, status=503, headers={"Retry-After": DATABASE_RETRY_AFTER}
        )
    if isinstance(e, KeyRetired):  # refused by the shared store's seal guard; taken up
        _count_rejection(request, "key_retired")
        log.warning("key_retired", path=request.rel_url.path)
        return json_response(KEY_RETIRED, status=503, headers={"Retry-After": "1"})
    log.error(
        "unhandled_error",
        method=request.method,
        path=request.rel_url.path,
        error=exception_summary(e),
    )
    return json_response(
        {"error": {"code": "internal", "message": "internal error; see the gateway log"}},
        status=500,
    )


def _count_rejection(request: web.Request, code: str) -> None:
    gw = request.app.get(GATEWAY)
    if gw is not None:
        gw.metrics.rejected.labels(code).inc()


def shaped(handler: Handler, check: RequestCheck | None) -> Handler:
    """`handler` behind `check`, every error it raises answered in the error shape."""

    async def shaped_handler(request: web.Request) -> web.StreamResponse:
        mark = request_scope.begin()  # the cluster's pool answers it without long waits
        try:
            return await handler(request if check is None else check(request))
        except Exception as e:  # every error gets the shape (cancellation is not one)
            return error_answer(request, e)
        finally:
            request_scope.end(mark)

    return shaped_handler


async def unmatched(request: web.Request) -> web.StreamResponse:
    """The catch-all's handler: 405 naming the methods of the routes whose path this
    is, else 404, as aiohttp's router answers when no route matches."""
    this = request.match_info.route.resource
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if resource is not this:
            found, methods = await resource.resolve(request)
            if found is None:
                allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


UNMATCHED = "unmatched"  # the catch-all's name: not a route the gateway serves


def install_fallback(app: web.Application, check: RequestCheck | None) -> None:
    """Add the catch-all; after every other route (the router tries it last)."""
    # `[\s\S]`, not `.`: a path with a newline (`%0a`) must reach the checks too.
    app.router.add_route("*", r"/{tail:[\s\S]*}", shaped(unmatched, check), name=UNMATCHED)
