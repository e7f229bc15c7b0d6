"""The one aiohttp application: the API and the panel side by side, and its runner.

Composed here, above both front ends, so neither `gateway/api/` nor `gateway/admin/`
imports the other (tests/test_layers.py checks). No middleware (each adds layers resumed
on every request, `api/shaping.py`): every route's handler, the panel's and the
catch-all's too, runs the Host and path checks (`web.guard.request_check`) first and
answers its errors in the API's shape; security headers on every answer (`web.headers`).
"""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway.admin import panel
from gateway.api import server, shaping
from gateway.app import Gateway
from gateway.web import headers
from gateway.web.client import ProxyTrust, client_address
from gateway.web.connections import GuardedAppRunner, limits_for
from gateway.web.guard import ServerNames, default_local_names, request_check

log = structlog.get_logger("smsgw.api")


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings (a `to=` filter is a phone number)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log.info(
            "http",
            method=request.method,
            path=request.rel_url.path,
            status=response.status,
            client=client_address(request),
            ms=round(time * 1000, 2),
        )


def proxy_trust(gateway: Gateway) -> ProxyTrust:
    c = gateway.config.http
    return ProxyTrust(c.trusted_proxies, c.proxy_headers)


def build_app(gateway: Gateway) -> web.Application:
    c = gateway.config.http
    names = ServerNames(c.server_names, default_local_names(c.listen))
    check = request_check(proxy_trust(gateway), names)
    app = web.Application(client_max_size=c.max_body_bytes)
    server.install(app, gateway, check)
    headers.install(app)
    if gateway.config.admin.enabled:
        panel.install(app, gateway, wrap=lambda handler: shaping.shaped(handler, check))
    shaping.install_fallback(app, check)  # last: what no route above matches
    return app


def runner_options(gateway: Gateway) -> dict[str, Any]:
    """AppRunner settings: no access log, or one that never logs query strings."""
    if gateway.config.http.access_log:
        return {"access_log_class": PathOnlyAccessLogger}
    return {"access_log": None}


def build_runner(gateway: Gateway, app: web.Application | None = None) -> GuardedAppRunner:
    """The runner for `app` (default: `build_app`), with the connection guards."""
    c = gateway.config.http
    limits = limits_for(c)
    if limits.max_connections < c.max_connections:
        log.warning(
            "http_connection_cap_lowered",
            configured=c.max_connections,
            cap=limits.max_connections,
            hint="raise LimitNOFILE (systemd) or ulimit -n",
        )
    return GuardedAppRunner(
        app or build_app(gateway),
        limits,
        proxy_trust(gateway),
        handle_signals=False,
        **runner_options(gateway),
    )
