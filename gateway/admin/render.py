"""Jinja2 pages from `admin_ui/templates/`, and the panel's error answers.

Autoescaping is on for every template. Each page gets `user`, `csrf_token`, `role`,
`url(name, **parts)` (a path from a route's name) and, for a signed-in session,
`session_timing` (seconds until the server ends it, and the idle timeout: the page's
script warns before the end) besides its own values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from gateway.admin.routing import CSRF_TOKEN, SESSION, USER
from gateway.admin.sessions import SessionManager
from gateway.errors import ApiError
from gateway.web.context import json_response

ADMIN_UI = Path(__file__).resolve().parent.parent.parent / "admin_ui"
TEMPLATES = ADMIN_UI / "templates"
STATIC = ADMIN_UI / "static"


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc"] = utc
    return env


def utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


TEMPLATE_ENV: web.AppKey[jinja2.Environment] = web.AppKey("panel_templates", jinja2.Environment)
SESSIONS: web.AppKey[SessionManager] = web.AppKey("panel_sessions", SessionManager)


def session_timing(request: web.Request) -> dict[str, float] | None:
    """Seconds until the server ends the signed-in session, and its idle timeout."""
    session = request.get(SESSION)
    sessions = request.app.get(SESSIONS)
    if session is None or sessions is None or session.stage != "full":
        return None
    now = sessions.clock_time()
    return {"ends_in": max(0.0, sessions.ends_at(session) - now), "idle": sessions.idle}


def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    env = request.app[TEMPLATE_ENV]
    user = request.get(USER)
    router = request.app.router

    def url(name: str, **parts: Any) -> str:
        return str(router[name].url_for(**{k: str(v) for k, v in parts.items()}))

    page = env.get_template(template).render(
        url=url,
        user=user,
        role=user.role.value if user is not None else None,
        csrf_token=request.get(CSRF_TOKEN, ""),
        session_timing=session_timing(request),
        **context,
    )
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


def wants_html(request: web.BaseRequest) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def error_response(request: web.Request, status: int, code: str, message: str) -> web.Response:
    """`{"error": {...}}` for programs, the same as a page for browsers."""
    if wants_html(request) and TEMPLATE_ENV in request.app:
        return render(request, "error.html", status=status, code=code, message=message)
    return json_response(ApiError(status, code, message).body(), status=status)


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})
