"""Accounts: creating users, logging in (password, then TOTP), changing passwords.

The web views and the CLI both go through here, so every path is throttled and
audited the same way. A failed login answers the same whether the name exists, is
disabled, or the password is wrong, and costs one argon2 verification in each case.
Every check of a secret (the password at sign-in, a code, the current password before
a change) first reserves its try with the throttle, in one writer transaction, so
guesses sent in parallel get no more checks than guesses sent one by one. Failures go
to the audit trail as repeats (one entry and a count per window); successes and
lock-outs are each an entry.

With a directory (`[directory]`, gateway/directory/), a name that is not a local
account is signed in against the directory: the same counts and audit, one bind per
try, a lock after `directory.max_failed_logins` (below the directory's own lockout).
Local accounts keep working when the directory is down: each of their sign-ins is then
a break-glass use, audited as `break_glass_login` and counted on the dashboard.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from drivers.clock import Clock
from gateway.admin import passwords, totp
from gateway.admin.throttle import LoginThrottle, Reservation
from gateway.config import AdminConfig
from gateway.panel_users import Credentials, FailureState, Role, User, UserExists
from gateway.usecases.audit import DetailValue

if TYPE_CHECKING:  # all built by the composition root (`app.py`)
    from gateway.directory.service import Directory
    from gateway.panel_store import PanelStore
    from gateway.store.audit_log import AuditTrail

log = structlog.get_logger("smsgw.admin")
MAX_DIRECTORY_NAME = 256

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
    unavailable: bool = False  # the directory did not answer
    no_access: bool = False  # right directory password, but in no mapped group


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
        self,
        repo: PanelStore,
        audit: AuditTrail,
        clock: Clock,
        config: AdminConfig,
        directory: Directory | None = None,
    ) -> None:
        self.repo = repo
        self.audit = audit
        self.clock = clock
        self.config = config
        self.directory = directory
        self.throttle = LoginThrottle.from_config(config)
        self.directory_throttle = self.throttle
        if directory is not None:
            self.directory_throttle = dataclasses.replace(
                self.throttle, max_failures=directory.config.max_failed_logins
            )
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

    async def _reserve(
        self,
        counted: list[str],
        guards: list[str],
        lockable: str,
        throttle: LoginThrottle | None = None,
    ) -> Reservation:
        """Count this try as failed before checking it, or refuse it (`throttle.py`)."""
        now = self.clock.time()
        rules = throttle or self.throttle

        def decide(
            states: dict[str, FailureState],
        ) -> tuple[Reservation, Mapping[str, FailureState]]:
            r = rules.reserve(states, now, counted=counted, lockable=(lockable,), guards=guards)
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
        if found is not None and found[0].from_directory:
            found = None  # a directory user's row: only the directory can sign them in
        if self.directory is not None and found is None:
            return await self._directory_login(username, password, source)
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
        if self.directory is not None:
            state = self.directory.status.state
            log.warning("break_glass_login", user_id=user.id, directory=state)
            await self.audit.record(
                user_actor(user.id), "break_glass_login", "user", user.id, directory=state
            )
        return await self._password_ok(user)

    async def _password_ok(self, user: User, **detail: DetailValue) -> LoginOutcome:
        required = await self.totp_required(user.role)
        if user.totp_enabled or required:
            await self.audit.record(
                user_actor(user.id), "login_password_ok", "user", user.id, **detail
            )
            return LoginOutcome(user, needs_totp=True, needs_enrolment=not user.totp_enabled)
        await self.audit.record(user_actor(user.id), "login", "user", user.id, factors=1, **detail)
        return LoginOutcome(user)

    async def _directory_login(self, username: str, password: str, source: str) -> LoginOutcome:
        """A sign-in against the directory: throttled on the same counts as a local one
        (locking sooner), then at most one bind as the user."""
        assert self.directory is not None
        account = _account_key(username)
        r = await self._reserve(
            [account, _source_key(source)],
            [_totp_key(username)],
            lockable=account,
            throttle=self.directory_throttle,
        )
        if not r.allowed:
            await self._repeat("anonymous", "login_throttled", None, source, factor="password")
            return LoginOutcome(retry_after=r.wait)
        name = username if len(username) <= MAX_DIRECTORY_NAME else ""
        outcome = await self.directory.sign_in(name, password)
        known = None
        if outcome.identity is not None:
            known = await self.repo.user_by_directory_id(outcome.identity.stable_id)
        if outcome.kind == "unavailable":
            await self._settle(r, None)  # the directory's fault, not a guess
            await self._repeat("anonymous", "login_failed", None, source, reason="directory_down")
            return LoginOutcome(unavailable=True)
        if outcome.kind == "no_role":
            await self._settle(r, account)  # the password was right
            await self._repeat("anonymous", "login_failed", known, source, reason="no_role")
            if known is not None:
                await self._lost_access(known, "no_role")
            return LoginOutcome(no_access=True)
        if outcome.kind != "ok" or outcome.identity is None or outcome.identity.role is None:
            reason = "credentials" if outcome.kind == "credentials" else outcome.detail
            await self._repeat("anonymous", "login_failed", known, source, reason=reason or "")
            await self._failed(r, known, "password", source)
            if outcome.kind == "blocked" and known is not None:
                await self._lost_access(known, outcome.detail or "blocked")
            return LoginOutcome()
        who, role = outcome.identity, outcome.identity.role
        try:
            user_id, _ = await self.repo.upsert_directory_user(
                secrets.token_hex(6), who.stable_id, who.name, role, self.clock.time()
            )
        except UserExists:
            log.warning("directory_name_is_local", reason="a local account has this name")
            await self._repeat("anonymous", "login_failed", None, source, reason="name_is_local")
            await self._failed(r, None, "password", source)
            return LoginOutcome()
        found = await self.repo.user_by_id(user_id)
        assert found is not None
        if found[0].disabled:  # disabled in the panel: that stands, whatever the directory says
            await self._repeat("anonymous", "login_failed", found[0], source, reason="disabled")
            await self._failed(r, found[0], "password", source)
            return LoginOutcome()
        await self._succeeded(r, account)
        return await self._password_ok(found[0], directory=True)

    async def _settle(self, r: Reservation, proved: str | None) -> None:
        """Take back this try's failure everywhere (but `proved`, whose count clears)."""
        undo = {k: (r.before[k], s) for k, s in r.after.items() if k != proved}
        await self.repo.settle_attempt([proved] if proved else [], undo)

    async def _lost_access(self, user: User, reason: str) -> None:
        ended = await self.repo.directory_checked(user.id, None, self.clock.time())
        await self.audit.record(
            "system", "directory_access_ended", "user", user.id, reason=reason, sessions=ended
        )

    async def recheck_directory_user(self, user: User) -> bool:
        """At a session's request once `recheck_interval` has passed: read the user's
        standing again. False when access ended (the sessions are gone). While the
        directory does not answer, the session keeps its role (its idle and absolute
        limits still apply) and the check is tried again at a later request."""
        if self.directory is None or user.directory_id is None:  # directory sign-in off
            await self.repo.end_user_sessions(user.id)
            return False
        outcome = await self.directory.recheck(user.directory_id)
        now = self.clock.time()
        if outcome.kind == "unavailable":
            return True
        role = outcome.identity.role if outcome.identity is not None else None
        if outcome.kind == "ok" and role == user.role:
            await self.repo.directory_checked(user.id, role, now)
            return True
        ended = await self.repo.directory_checked(user.id, role, now)
        reason = outcome.kind if outcome.kind != "ok" else "role_changed"
        await self.audit.record(
            "system", "directory_access_ended", "user", user.id, reason=reason, sessions=ended
        )
        log.info("directory_access_ended", user_id=user.id, reason=reason, sessions=ended)
        return False

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
