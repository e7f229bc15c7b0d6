"""The panel's composition: its services, the route table, and the one gate.

Theory of operation. `PANEL_ROUTES` is every route the panel serves, collected from
the modules in `ROUTE_MODULES`. `install()` registers each one wrapped by `_gate()`,
which, in this order: finds the session from the cookie (ending it if idle or past its
lifetime); refuses a non-public route without a session (a page redirects to the login,
anything else gets 401); sends a password-only session to the TOTP step; refuses a
role the route does not list (403); on anything but GET/HEAD checks the origin and the
CSRF token (403); then calls the handler and marks the answer `no-store`. Security
headers are added to every response of the app (`gateway/web/headers.py`). Because registration,
the gate and the checks all come from the same table, a route cannot skip them; the
route-table test walks `app.router` to prove it.
"""

from __future__ import annotations

import dataclasses
import importlib
import mimetypes
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from gateway.admin import csrf
from gateway.admin.accounts import Accounts, user_actor
from gateway.admin.render import (
    SESSIONS,
    STATIC,
    TEMPLATE_ENV,
    environment,
    error_response,
    redirect,
)
from gateway.admin.routing import (
    CSRF_TOKEN,
    OPERATORS,
    PHI_READERS,
    SESSION,
    USER,
    Handler,
    PanelRoute,
)
from gateway.admin.sessions import Ended, Session, SessionManager
from gateway.app import Gateway
from gateway.cluster.local_only import LocalFeature, feature_of_module, refusal
from gateway.panel_users import User
from gateway.usecases.caller import Caller

if TYPE_CHECKING:  # built by the composition root (`Gateway.admin_repo`)
    from gateway.panel_store import PanelStore

log = structlog.get_logger("smsgw.admin")

# Modules whose `ROUTES` make up the panel, in registration order.
ROUTE_MODULES = (
    "gateway.admin.views_auth",
    "gateway.admin.views_users",
    "gateway.admin.views_audit",
    "gateway.admin.dashboard",
    "gateway.admin.pages",
    "gateway.admin.views_session",
    "gateway.admin.views_webhooks",
    "gateway.admin.views_consent",
    "gateway.admin.views_appointments",
    "gateway.admin.views_hl7",
    "gateway.admin.views_templates",
    "gateway.admin.views_reminders",
    "gateway.admin.views_worklist",
    "gateway.admin.views_contacts",
    "gateway.admin.views_groups",
    "gateway.admin.views_surveys",  # i15-surveys
    "gateway.admin.views_campaigns",  # i15-campaigns
    "gateway.admin.views_links",
    "gateway.admin.views_analytics",  # i15-analytics
    "gateway.admin.views_cluster",
)
LOGIN_PATH = "/login"
TOTP_PATH = "/login/totp"
ENROL_PATH = "/account/totp"
LANDING_PATH = "/"
SESSION_COOKIE = "smsgw_session"
PRE_SESSION_COOKIE = "smsgw_pre"
SECURE_PREFIX = "__Host-"


def panel_routes(*, cluster: bool = False) -> tuple[PanelRoute, ...]:
    """Every route of `ROUTE_MODULES`; on a cluster node (`cluster`) those of a feature
    whose data would stay in the node's own store show the refusal instead."""
    routes: list[PanelRoute] = []
    for name in ROUTE_MODULES:
        found: tuple[PanelRoute, ...] = importlib.import_module(name).ROUTES
        local = feature_of_module(name) if cluster else None
        if local is not None:
            found = tuple(dataclasses.replace(r, handler=_refusing(local)) for r in found)
        routes.extend(found)
    names = [r.name for r in routes]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"panel route names used twice: {sorted(duplicates)}")
    return tuple(routes)


def _refusing(feature: LocalFeature) -> Handler:
    async def refuse(request: web.Request) -> web.StreamResponse:
        e = refusal(feature)
        return error_response(request, e.status, e.code, e.message)

    return refuse


@dataclass
class Panel:
    gateway: Gateway
    repo: PanelStore
    sessions: SessionManager
    accounts: Accounts
    routes: tuple[PanelRoute, ...]
    pre_session_key: bytes

    @classmethod
    def build(cls, gateway: Gateway) -> Panel:
        c = gateway.config.admin
        repo = gateway.admin_repo
        return cls(
            gateway,
            repo,
            SessionManager(repo, gateway.clock, c.idle_timeout, c.absolute_lifetime),
            Accounts(repo, gateway.audit, gateway.clock, c, gateway.directory),
            panel_routes(cluster=gateway.cluster is not None),
            gateway.panel_csrf_key,
        )


PANEL: web.AppKey[Panel] = web.AppKey("panel", Panel)


def panel(request: web.Request) -> Panel:
    return request.app[PANEL]


# -- cookies -------------------------------------------------------------------------------


def cookie_name(request: web.BaseRequest, base: str) -> str:
    """`__Host-` names over TLS: the browser then insists on Secure, Path=/, no Domain."""
    return SECURE_PREFIX + base if request.secure else base


def set_cookie(
    response: web.StreamResponse, request: web.BaseRequest, base: str, value: str
) -> None:
    response.set_cookie(
        cookie_name(request, base),
        value,
        path="/",
        httponly=True,
        secure=request.secure,
        samesite="Strict",
    )


def clear_cookie(response: web.StreamResponse, request: web.BaseRequest, base: str) -> None:
    response.del_cookie(
        cookie_name(request, base), path="/", secure=request.secure, samesite="Strict"
    )


def start_session_cookie(response: web.StreamResponse, request: web.Request, token: str) -> None:
    set_cookie(response, request, SESSION_COOKIE, token)
    if cookie_name(request, PRE_SESSION_COOKIE) in request.cookies:
        clear_cookie(response, request, PRE_SESSION_COOKIE)


# -- the gate ------------------------------------------------------------------------------


async def _session(request: web.Request) -> tuple[Session | None, User | None]:
    p = panel(request)
    token = request.cookies.get(cookie_name(request, SESSION_COOKIE))
    if not token:
        return None, None
    found = await p.sessions.resolve(token)
    if isinstance(found, Ended):
        await p.gateway.audit.record(
            "system", "session_timeout", "user", found.user_id, reason=found.reason
        )
        return None, None
    if found is None:
        return None, None
    record = await p.repo.user_by_id(found.user_id)
    if record is None or record[0].disabled:
        await p.sessions.end(found)
        return None, None
    user = await recheck_if_due(p, record[0])
    return (found, user) if user is not None else (None, None)


async def recheck_if_due(p: Panel, user: User) -> User | None:
    """A directory user as the directory has them now, if the recheck interval has
    passed; None when access ended (left the groups, disabled, gone: sessions ended)."""
    if not (user.from_directory and _recheck_due(p, user)):
        return user
    if not await p.accounts.recheck_directory_user(user):
        return None
    record = await p.repo.user_by_id(user.id)
    return None if record is None or record[0].disabled else record[0]


def _recheck_due(p: Panel, user: User) -> bool:
    """A directory user's role is read again at the first request after the interval."""
    directory = p.accounts.directory
    if directory is None:
        return True  # the directory was switched off: its users can no longer sign in
    checked = user.role_checked_at or 0.0
    return p.gateway.clock.time() - checked >= directory.config.recheck_interval


def _unauthenticated(request: web.Request) -> web.StreamResponse:
    if request.method in ("GET", "HEAD"):
        response = redirect(LOGIN_PATH)
    else:
        response = error_response(request, 401, "unauthenticated", "sign in first")
    if cookie_name(request, SESSION_COOKIE) in request.cookies:
        clear_cookie(response, request, SESSION_COOKIE)
    return response


def _gate(route: PanelRoute) -> Handler:
    async def gated(request: web.Request) -> web.StreamResponse:
        p = panel(request)
        session, user = await _session(request)
        if not route.public:
            assert route.roles is not None
            if session is None or user is None:
                return _unauthenticated(request)
            if session.stage != "full" and not route.mfa_pending:
                if request.method in ("GET", "HEAD"):
                    return redirect(ENROL_PATH if not user.totp_enabled else TOTP_PATH)
                return error_response(request, 401, "second_factor_required", "enter your code")
            if user.role not in route.roles:
                log.info("panel_forbidden", route=route.name, user_id=user.id)
                return error_response(
                    request, 403, "forbidden", "your role does not allow this page or action"
                )
        new_nonce = None
        if session is not None:
            request[SESSION] = session
            request[CSRF_TOKEN] = session.csrf_token
        else:
            nonce = request.cookies.get(cookie_name(request, PRE_SESSION_COOKIE), "")
            if not nonce or len(nonce) > 64:
                nonce = new_nonce = secrets.token_urlsafe(24)
            request[CSRF_TOKEN] = csrf.pre_session_token(p.pre_session_key, nonce)
        if user is not None and session is not None:
            request[USER] = user
        if route.state_changing:
            if not csrf.same_origin(request):
                log.info("csrf_refused", route=route.name, check="origin")
                return error_response(
                    request, 403, "csrf_origin", "the request did not come from this site"
                )
            if not csrf.token_matches(await csrf.submitted_token(request), request[CSRF_TOKEN]):
                log.info("csrf_refused", route=route.name, check="token")
                return error_response(
                    request, 403, "csrf_token", "the form is stale or forged; reload the page"
                )
        response = await route.handler(request)
        if new_nonce is not None and not response.prepared:
            set_cookie(response, request, PRE_SESSION_COOKIE, new_nonce)
        return response

    gated.__name__ = f"panel_{route.name}"
    return gated


# -- static files --------------------------------------------------------------------------

# Vendored libraries never change under the same path; the panel's own files may.
IMMUTABLE_UNDER = "vendor/"
mimetypes.add_type("text/javascript", ".js")
mimetypes.add_type("text/css", ".css")
mimetypes.add_type("image/svg+xml", ".svg")
mimetypes.add_type("font/woff2", ".woff2")


async def static_file(request: web.Request) -> web.StreamResponse:
    relative = request.match_info["path"]
    root = STATIC.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root) or not target.is_file() or relative.startswith("."):
        return error_response(request, 404, "not_found", "no such file")
    response = web.FileResponse(target)
    kind, _ = mimetypes.guess_type(target.name)
    if kind is not None:
        response.content_type = kind
        if kind.startswith("text/") or kind in ("image/svg+xml",):
            response.charset = "utf-8"
    response.headers["Cache-Control"] = (
        "public, max-age=31536000, immutable"
        if relative.startswith(IMMUTABLE_UNDER)
        else "no-cache"
    )
    return response


STATIC_ROUTE = PanelRoute("GET", "/static/{path:.+}", static_file, None, False, "static")


def install(
    app: web.Application, gateway: Gateway, wrap: Callable[[Handler], Handler] | None = None
) -> Panel:
    """Serve the panel from `app`; `wrap` wraps each route's handler (the composing
    app's request checks and error shape, `gateway/http_app.py`)."""
    p = Panel.build(gateway)
    app[PANEL] = p
    routes = (*p.routes, STATIC_ROUTE)
    app[TEMPLATE_ENV] = environment()
    app[SESSIONS] = p.sessions
    for route in routes:
        gated = _gate(route)
        handler = wrap(gated) if wrap is not None else gated
        app.router.add_route(route.method, route.path, handler, name=route.name)
    for name in ROUTE_MODULES:
        # A route module may own app-wide state (the dashboard's live hub).
        setup = getattr(importlib.import_module(name), "install", None)
        if setup is not None:
            setup(app, gateway)
    return p


def actor(request: web.Request) -> str:
    return user_actor(request[USER].id)


def user_caller(request: web.Request) -> Caller:
    """The signed-in user as the application layer knows them: PHI for the roles that
    may read it, changes for operators."""
    role = request[USER].role
    return Caller.for_panel_user(
        actor(request), reads_phi=role in PHI_READERS, acts=role in OPERATORS
    )


def __getattr__(name: str) -> tuple[PanelRoute, ...]:
    # PANEL_ROUTES is collected on first use: the route modules import this one.
    if name == "PANEL_ROUTES":
        return (*panel_routes(), STATIC_ROUTE)
    raise AttributeError(name)
