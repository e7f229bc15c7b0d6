"""Helpers for the admin panel tests: a real gateway app on loopback, users, sign-in."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from drivers.clock import FakeClock
from gateway.admin import totp
from gateway.admin.accounts import Accounts
from gateway.app import Gateway
from gateway.panel_users import Role, User

PASSWORD = "violet staircase under the harbour"
_CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


@dataclass
class PanelClient:
    gw: Gateway
    client: TestClient[Any, Any]

    @property
    def clock(self) -> FakeClock:
        assert isinstance(self.gw.clock, FakeClock)
        return self.gw.clock

    @property
    def origin(self) -> str:
        return str(self.client.make_url("/")).rstrip("/")

    @functools.cached_property
    def accounts(self) -> Accounts:
        return Accounts(self.gw.admin_repo, self.gw.audit, self.gw.clock, self.gw.config.admin)

    async def add_user(
        self, username: str, role: Role = Role.ADMIN, password: str = PASSWORD
    ) -> User:
        return await self.accounts.create_user(username, role, password, "console")

    def cookie(self, name: str) -> str | None:
        for c in self.client.session.cookie_jar:
            if c.key == name:
                return c.value
        return None

    async def csrf(self, path: str = "/login") -> str:
        """The CSRF token a page served at `path` carries (and its cookies, kept)."""
        page = await self.client.get(path)
        found = _CSRF_META.search(await page.text())
        assert found is not None, f"{path} ({page.status}) has no csrf meta tag"
        return found.group(1)

    async def post(
        self,
        path: str,
        data: Mapping[str, str] | None = None,
        *,
        token: str | None = None,
        origin: str | None = "",
        headers: Mapping[str, str] | None = None,
    ) -> ClientResponse:
        """POST a form as a same-origin browser would; `origin=None` sends no Origin."""
        form = dict(data or {})
        if token is not None:
            form["csrf"] = token
        sent = dict(headers or {})
        if origin is not None:
            sent["Origin"] = origin or self.origin
        return await self.client.post(path, data=form, headers=sent, allow_redirects=False)

    async def login(self, username: str, password: str = PASSWORD) -> ClientResponse:
        token = await self.csrf("/login")
        return await self.post("/login", {"username": username, "password": password}, token=token)

    async def login_ok(self, username: str, password: str = PASSWORD) -> str:
        """Sign in (password only); the session's CSRF token."""
        r = await self.login(username, password)
        assert r.status == 303, await r.text()
        assert r.headers["Location"] == "/"
        return await self.csrf("/account")

    async def totp_secret(self, user_id: str) -> str:
        found = await self.gw.admin_repo.user_by_id(user_id)
        assert found is not None and found[1].totp_secret is not None
        return found[1].totp_secret

    def code(self, secret: str, steps_ahead: int = 0) -> str:
        step = int(self.clock.time() // totp.STEP_SECONDS) + steps_ahead
        return totp.code_at(secret, step)

    async def audit_actions(self) -> list[str]:
        return [e.action for e in reversed(await self.gw.audit.entries(limit=1000))]
