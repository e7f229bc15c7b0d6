"""`POST /session/keepalive`: the "Stay signed in" button of the idle warning.

Every page tells its script when the session ends (`render.session_timing`); a minute
or two before, the page asks whether to stay signed in (WCAG 2.2.1). Only this
request, made by that button, moves the idle deadline without other work: a page left
open never keeps its session alive by itself. The gate checks session and CSRF token.
"""

from __future__ import annotations

from aiohttp import web

from gateway.admin.panel import panel
from gateway.admin.routing import ANY_ROLE, PanelRoute, current_session
from gateway.web.context import json_response


async def keep_alive(request: web.Request) -> web.StreamResponse:
    p = panel(request)
    session = await p.sessions.keep_alive(current_session(request))
    ends_in = max(0.0, p.sessions.ends_at(session) - p.sessions.clock_time())
    return json_response({"ends_in": ends_in, "idle": p.sessions.idle})


ROUTES: tuple[PanelRoute, ...] = (
    PanelRoute("POST", "/session/keepalive", keep_alive, ANY_ROLE, False, "session_keepalive"),
)
