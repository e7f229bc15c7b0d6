"""Accounts: creating users, logging in (password, then TOTP), changing passwords.

The web views and the CLI both go through here, so every path is throttled and
audited the same way. A failed login answers the same whether the name exists, is
disabled, or the password is wrong, and costs one argon2 verification in each case.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from drivers.clock import Clock
from gateway.admin import passwords, totp
from gateway.admin.audit import AuditTrail
from gateway.admin.repo import AdminRepo, Credentials, FailureState, Role, User
from gateway.admin.throttle import LoginThrottle
from gateway.config import AdminConfig

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


class InvalidUsername(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    """`user` is set on success; `retry_after` when the attempt was not even tried."""

    user: User | None = None
    needs_totp: bool = False
    needs_enrolment: bool = False
    retry_after: float | None = None


def user_actor(user_id: str) -> str:
    return f"user:{user_id}"


def _account_key(username: str) -> str:
    # Hashed: people type passwords into the name field, and unknown names are counted too.
    digest = hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]
    return f"account:{digest}"


def _source_key(source: str) -> str:
    return f"source:{source[:64]}"


class Accounts:
    def __init__(
        self, repo: AdminRepo, audit: AuditTrail, clock: Clock, config: AdminConfig
    ) -> None:
        self.repo = repo
        self.audit = audit
        self.clock = clock
        self.config = config
        self.throttle = LoginThrottle.from_config(config)
        self.hasher = passwords.Hasher(
            config.password_hash_memory_kib,
            config.password_hash_iterations,
            config.password_hash_lanes,
        )

    # -- policy --------------------------------------------------------------------------

    async def totp_required_roles(self) -> frozenset[Role]:
        configured = frozenset(Role(r) for r in self.config.totp_required_roles)
        return configured | await self.repo.totp_required_roles()

    async def totp_required(self, role: Role) -> bool:
        return role in await self.totp_required_roles()

    async def check_new_password(self, password: str, username: str, role: Role) -> str:
        """Normalised password if the policy takes it; raises `passwords.WeakPassword`."""
        return passwords.check(
            password, username=username, totp_required=await self.totp_required(role)
        )

    # -- users ---------------------------------------------------------------------------

    async def create_user(self, username: str, role: Role, password: str, actor: str) -> User:
        if not USERNAME.match(username):
            raise InvalidUsername(
                "a user name has 1-64 letters, digits or . _ @ - and starts with a letter or digit"
            )
        await self.check_new_password(password, username, role)
        user_id = secrets.token_hex(6)
        now = self.clock.time()
        await self.repo.add_user(
            user_id, username, role, await self.hasher.hash_async(password), now
        )
        await self.audit.record(actor, "user_created", "user", user_id, role=role.value)
        found = await self.repo.user_by_id(user_id)
        assert found is not None
        return found[0]

    async def set_password(
        self, user: User, password: str, actor: str, *, keep_session: bytes | None = None
    ) -> None:
        """Set a new password (policy checked); the user's other sessions end."""
        await self.check_new_password(password, user.username, user.role)
        digest = await self.hasher.hash_async(password)
        await self.repo.set_password(user.id, digest, self.clock.time(), keep_session=keep_session)
        await self.audit.record(actor, "password_changed", "user", user.id)

    # -- login ---------------------------------------------------------------------------

    async def _throttled(self, keys: list[str]) -> tuple[dict[str, FailureState], float]:
        states = await self.repo.failures(keys)
        now = self.clock.time()
        return states, max(self.throttle.wait(s, now) for s in states.values())

    async def _failed(self, states: dict[str, FailureState], user: User | None) -> None:
        now = self.clock.time()
        updated = {
            key: self.throttle.after_failure(s, now, can_lock=key.startswith("account:"))
            for key, s in states.items()
        }
        await self.repo.save_failures(updated)
        if user is not None and any(
            self.throttle.locked(updated[k], now) and not self.throttle.locked(states[k], now)
            for k in updated
        ):
            await self.audit.record("system", "account_locked", "user", user.id)

    async def login(self, username: str, password: str, source: str) -> LoginOutcome:
        keys = [_account_key(username), _source_key(source)]
        states, wait = await self._throttled(keys)
        found = await self.repo.user_by_name(username) if USERNAME.match(username) else None
        user = found[0] if found else None
        if wait > 0:
            await self.audit.record(
                "anonymous", "login_throttled", "user", user.id if user else None
            )
            return LoginOutcome(retry_after=wait)
        ok = await self.hasher.verify_async(found[1].password_hash if found else None, password)
        if user is None or not ok or user.disabled:
            await self._failed(states, user)
            await self.audit.record(
                "anonymous",
                "login_failed",
                "user",
                user.id if user else None,
                reason="disabled" if ok and user and user.disabled else "credentials",
            )
            return LoginOutcome()
        await self.repo.clear_failures(keys[:1])
        creds = found[1] if found else None
        if creds is not None and self.hasher.needs_rehash(creds.password_hash):
            await self.repo.set_password(
                user.id,
                await self.hasher.hash_async(password),
                user.password_changed_at,
                keep_session=None,
            )
        required = await self.totp_required(user.role)
        if user.totp_enabled or required:
            await self.audit.record(user_actor(user.id), "login_password_ok", "user", user.id)
            return LoginOutcome(user, needs_totp=True, needs_enrolment=not user.totp_enabled)
        await self.audit.record(user_actor(user.id), "login", "user", user.id, factors=1)
        return LoginOutcome(user)

    async def second_factor(
        self,
        user: User,
        creds: Credentials,
        code: str,
        source: str,
        *,
        enrolling: bool,
        completes_login: bool = True,
    ) -> LoginOutcome:
        """Check a TOTP code (enrolment confirmation when `enrolling`); throttled like a login."""
        keys = [_account_key(user.username), _source_key(source)]
        states, wait = await self._throttled(keys)
        if wait > 0:
            await self.audit.record(user_actor(user.id), "login_throttled", "user", user.id)
            return LoginOutcome(retry_after=wait)
        step = None
        if creds.totp_secret is not None:
            step = totp.match_step(creds.totp_secret, code, self.clock.time(), creds.totp_last_step)
        if step is None or not await self.repo.spend_totp_step(user.id, step, enable=enrolling):
            await self._failed(states, user)
            await self.audit.record(user_actor(user.id), "totp_failed", "user", user.id)
            return LoginOutcome()
        await self.repo.clear_failures(keys[:1])
        if enrolling:
            await self.audit.record(user_actor(user.id), "totp_enrolled", "user", user.id)
        if completes_login:
            await self.audit.record(user_actor(user.id), "login", "user", user.id, factors=2)
        return LoginOutcome(user)

    async def unlock(self, username: str, actor: str) -> None:
        await self.repo.clear_failures([_account_key(username)])
        found = await self.repo.user_by_name(username)
        await self.audit.record(actor, "account_unlocked", "user", found[0].id if found else None)
