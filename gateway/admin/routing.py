"""The panel's route declaration: every page or action is one `PanelRoute`.

`panel.py` registers each route behind the same gate, derived from its declaration:
session (unless `roles` is None: public), role, CSRF on anything but GET/HEAD, and the
security headers (on every response of the app, API included). A route therefore
cannot skip them. Modules that contribute routes expose `ROUTES` and are listed in
`panel.ROUTE_MODULES`.

Handlers find the signed-in user and session with `current_user(request)` and
`current_session(request)`, and the CSRF token for their forms with
`csrf_token(request)` (templates get it as `csrf_token`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.admin.sessions import Session
from gateway.panel_users import Role, User

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

ANY_ROLE: frozenset[Role] = frozenset(Role)
ADMIN: frozenset[Role] = frozenset({Role.ADMIN})
OPERATORS: frozenset[Role] = frozenset({Role.ADMIN, Role.OPERATOR})
AUDIT_READERS: frozenset[Role] = frozenset({Role.ADMIN, Role.AUDITOR})
PHI_READERS: frozenset[Role] = OPERATORS

USER: web.RequestKey[User] = web.RequestKey("user", User)
SESSION: web.RequestKey[Session] = web.RequestKey("session", Session)
CSRF_TOKEN: web.RequestKey[str] = web.RequestKey("csrf_token", str)


@dataclass(frozen=True, slots=True)
class PanelRoute:
    """One panel route.

    `roles`: who may use it; None makes it public (login, static files).
    `phi`: the answer may show personal data (never cached, never for viewer/auditor).
    `name`: stable, unique; templates build links from it.
    `mfa_pending`: also answers a session that has passed the password but not yet
    the second factor (the TOTP pages only).
    """

    method: str
    path: str
    handler: Handler
    roles: frozenset[Role] | None
    phi: bool
    name: str
    mfa_pending: bool = False

    def __post_init__(self) -> None:
        if self.phi and (self.roles is None or not self.roles <= PHI_READERS):
            raise ValueError(f"panel route {self.name}: PHI only for {sorted(PHI_READERS)}")

    @property
    def public(self) -> bool:
        return self.roles is None

    @property
    def state_changing(self) -> bool:
        return self.method not in ("GET", "HEAD")


def current_user(request: web.Request) -> User:
    return request[USER]


def current_session(request: web.Request) -> Session:
    return request[SESSION]


def csrf_token(request: web.Request) -> str:
    return request[CSRF_TOKEN]
