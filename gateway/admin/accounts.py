"""Accounts: creating users, logging in (password, then TOTP), changing passwords.

The web views and the CLI both go through here, so every path is throttled and
audited the same way. A failed login answers the same whether the name exists, is
disabled, or the password is wrong, and costs one argon2 verification in each case.
Every check of a secret (the password at sign-in, a code, the current password before
a change) first reserves its try with the throttle, in one writer transaction, so
guesses sent in parallel get no more checks than guesses sent one by one. Failures go
to the audit trail as repeats (one entry and a count per window); successes and
lock-outs are each an entry.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drivers.clock import Clock
from gateway.admin import passwords, totp
from gateway.admin.throttle import LoginThrottle, Reservation
from gateway.config import AdminConfig
from gateway.panel_users import Credentials, FailureState, Role, User
from gateway.usecases.audit import DetailValue

if TYPE_CHECKING:  # both built by the composition root (`app.py`)
    from gateway.store.audit_log import AuditTrail
    from gateway.store.panel_sql import AdminRepo

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
SOURCE_CHARS = 64


class InvalidUsername(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LoginOutcome:
    """`user` is set on success; `retry_after` when the attempt was not even tried;
    `signed_out` when the failure locked the account and ended its sessions."""

    user: User | None = None
    needs_totp: bool = False
    needs_enrolment: bool = False
    retry_after: float | None = None
    signed_out: bool = False


def user_actor(user_id: str) -> str:
    return f"user:{user_id}"


def _name_digest(username: str) -> str:
    # Hashed: people type passwords into the name field, and unknown names are counted too.
    return hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]


def _account_key(username: str) -> str:
    return f"account:{_name_digest(username)}"


def _totp_key(username: str) -> str:
    """Second-factor failures: a count of their own, which a right password leaves alone."""
    return f"totp:{_name_digest(username)}"


def _source_key(source: str) -> str:
    return f"source:{source[:SOURCE_CHARS]}"


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
        self.match_code = totp.match_step  # the code check, one call per code tried

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

    # -- checking a secret ----------------------------------------------------------------

    async def _reserve(self, counted: list[str], guards: list[str], lockable: str) -> Reservation:
        """Count this try as failed before checking it, or refuse it (`throttle.py`)."""
        now = self.clock.time()

        def decide(
            states: dict[str, FailureState],
        ) -> tuple[Reservation, Mapping[str, FailureState]]:
            r = self.throttle.reserve(
                states, now, counted=counted, lockable=(lockable,), guards=guards
            )
            return r, r.after

        return await self.repo.reserve_attempt([*counted, *guards], decide)

    async def _succeeded(self, r: Reservation, proved: str) -> None:
        """The try was right: its own count starts again, the others lose this try."""
        undo = {k: (r.before[k], s) for k, s in r.after.items() if k != proved}
        await self.repo.settle_attempt([proved], undo)

    async def _repeat(
        self, actor: str, action: str, user: User | None, source: str, **ids: DetailValue
    ) -> None:
        await self.audit.record_repeated(
            self.config.failure_audit_window,
            actor,
            action,
            "user",
            user.id if user else None,
            source=source[:SOURCE_CHARS],
            **ids,
        )

    async def _failed(self, r: Reservation, user: User | None, factor: str, source: str) -> None:
        if user is not None and r.locking:
            await self.audit.record(
                "system",
                "account_locked",
                "user",
                user.id,
                factor=factor,
                source=source[:SOURCE_CHARS],
            )

    # -- login ---------------------------------------------------------------------------

    async def login(self, username: str, password: str, source: str) -> LoginOutcome:
        account = _account_key(username)
        found = await self.repo.user_by_name(username) if USERNAME.match(username) else None
        user = found[0] if found else None
        r = await self._reserve(
            [account, _source_key(source)], [_totp_key(username)], lockable=account
        )
        if not r.allowed:
            await self._repeat("anonymous", "login_throttled", user, source, factor="password")
            return LoginOutcome(retry_after=r.wait)
        ok = await self.hasher.verify_async(found[1].password_hash if found else None, password)
        if user is None or not ok or user.disabled:
            reason = "disabled" if ok and user and user.disabled else "credentials"
            await self._repeat("anonymous", "login_failed", user, source, reason=reason)
            await self._failed(r, user, "password", source)
            return LoginOutcome()
        await self._succeeded(r, account)
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
        """Check a TOTP code (enrolment confirmation when `enrolling`); throttled like a
        login, on a count of its own that a right password does not reset."""
        codes = _totp_key(user.username)
        r = await self._reserve(
            [codes, _source_key(source)], [_account_key(user.username)], lockable=codes
        )
        actor = user_actor(user.id)
        if not r.allowed:
            await self._repeat(actor, "login_throttled", user, source, factor="totp")
            return LoginOutcome(retry_after=r.wait)
        step = None
        if creds.totp_secret is not None:
            step = self.match_code(creds.totp_secret, code, self.clock.time(), creds.totp_last_step)
        if step is None or not await self.repo.spend_totp_step(user.id, step, enable=enrolling):
            await self._repeat(actor, "totp_failed", user, source)
            await self._failed(r, user, "totp", source)
            return LoginOutcome()
        await self._succeeded(r, codes)
        if enrolling:
            await self.audit.record(actor, "totp_enrolled", "user", user.id)
        if completes_login:
            await self.audit.record(actor, "login", "user", user.id, factors=2)
        return LoginOutcome(user)

    async def check_current_password(
        self, user: User, creds: Credentials, password: str, source: str
    ) -> LoginOutcome:
        """The signed-in user's password, asked again before a change: a stolen session
        must not make it guessable, so it is throttled and locks like a login."""
        account = _account_key(user.username)
        r = await self._reserve(
            [account, _source_key(source)], [_totp_key(user.username)], lockable=account
        )
        actor = user_actor(user.id)
        if not r.allowed:
            await self._repeat(actor, "password_change_refused", user, source, reason="throttled")
            return LoginOutcome(retry_after=r.wait)
        if not await self.hasher.verify_async(creds.password_hash, password):
            await self._repeat(actor, "password_change_refused", user, source, reason="credentials")
            await self._failed(r, user, "password", source)
            if r.locking:
                # Guessing from inside a session is what a stolen session does: the lock
                # ends every session of the account, the guesser's included.
                ended = await self.repo.end_user_sessions(user.id)
                await self.audit.record("system", "sessions_ended", "user", user.id, count=ended)
                return LoginOutcome(signed_out=True)
            return LoginOutcome()
        await self._succeeded(r, account)
        return LoginOutcome(user)

    async def service_login(self, realm: str, name: str, source: str, *, right: bool) -> bool:
        """A service's shared-secret login (a Kannel sendsms user), throttled and locked
        like a panel sign-in on counts of its own (`realm`), so a password cannot be
        guessed at wire speed. The caller compares the secret (cheap); a wrong one is
        counted in one atomic step, a right one only checked against the counts, so a
        client's parallel sends are never throttled by each other, and while a delay or
        lock holds a right password is refused too (no oracle). A success resets no
        count: counts lapse after `lockout_minutes` without failures, so a client's
        traffic cannot keep an attacker's count from locking the account."""
        account = f"{realm}:{_name_digest(name)}"
        keys = [account, f"{realm}-{_source_key(source)}"]
        if right:
            now = self.clock.time()

            def check(states: dict[str, FailureState]) -> tuple[float, dict[str, FailureState]]:
                return max(self.throttle.wait(states[k], now) for k in keys), {}

            if await self.repo.reserve_attempt(keys, check) <= 0:
                return True
            await self._repeat_service("service_login_throttled", realm, source)
            return False
        r = await self._reserve(keys, [], lockable=account)
        if not r.allowed:
            await self._repeat_service("service_login_throttled", realm, source)
            return False
        await self._repeat_service("service_login_failed", realm, source)
        if r.locking:
            await self.audit.record(
                "system", "account_locked", realm, None, source=source[:SOURCE_CHARS]
            )
        return False

    async def _repeat_service(self, action: str, realm: str, source: str) -> None:
        await self.audit.record_repeated(
            self.config.failure_audit_window,
            "anonymous",
            action,
            realm,
            None,
            source=source[:SOURCE_CHARS],
        )

    async def unlock(self, username: str, actor: str) -> None:
        await self.repo.clear_failures([_account_key(username), _totp_key(username)])
        found = await self.repo.user_by_name(username)
        await self.audit.record(actor, "account_unlocked", "user", found[0].id if found else None)
