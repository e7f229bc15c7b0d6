"""Server-side sessions (ASVS 7, HIPAA automatic logoff).

The browser holds a 256-bit random id in a cookie; the store holds only its SHA-256,
so a copy of the database opens no session. A session is `mfa` after the password
(only the TOTP pages answer it) and `full` after the second factor, if any. Each step
up issues a new id and deletes the old one (no fixation). A session ends after
`idle_timeout` without a request or `absolute_lifetime` after login, whichever comes
first; logout, a password change, a role change or disabling the user delete it on the
server. `last_seen` is written at most every `TOUCH_EVERY` seconds, so a page and its
assets cost one write, not one per request; a resolved `Session` carries the stored
value, so `ends_at()` is when the server really ends it. `keep_alive()` (the panel's
"Stay signed in" button, shown before the idle deadline) always writes it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from drivers.clock import Clock
from gateway.panel_users import SessionRow

if TYPE_CHECKING:  # built by the composition root (`Gateway.admin_repo`)
    from gateway.panel_store import PanelStore

Stage = Literal["mfa", "full"]
TOUCH_EVERY = 5.0


def id_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class Session:
    id_hash: bytes
    user_id: str
    stage: Stage
    csrf_token: str
    created_at: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class Ended:
    """A session found but past its time; it is deleted already."""

    user_id: str
    reason: Literal["idle", "absolute"]


class SessionManager:
    def __init__(self, repo: PanelStore, clock: Clock, idle: float, absolute: float) -> None:
        self._repo = repo
        self._clock = clock
        self.idle = idle
        self.absolute = absolute

    async def start(
        self, user_id: str, stage: Stage, *, replacing: bytes | None = None
    ) -> tuple[str, Session]:
        """A new session id (the cookie value) and its record; `replacing` is deleted.

        A step from `mfa` to `full` keeps the login time: the absolute lifetime counts
        from the password.
        """
        now = self._clock.time()
        created = now
        if replacing is not None:
            old = await self._repo.session(replacing)
            if old is not None and old.user_id == user_id:
                created = old.created_at
        token = secrets.token_urlsafe(32)
        session = Session(id_hash(token), user_id, stage, secrets.token_urlsafe(32), created, now)
        await self._repo.replace_session(
            SessionRow(
                session.id_hash,
                user_id,
                stage,
                session.csrf_token,
                session.created_at,
                session.last_seen,
            ),
            replacing,
        )
        return token, session

    async def resolve(self, token: str) -> Session | Ended | None:
        """The live session for a cookie value; `Ended` (and deleted) if it timed out."""
        if not token or len(token) > 128:
            return None
        row = await self._repo.session(id_hash(token))
        if row is None:
            return None
        now = self._clock.time()
        reason: Literal["idle", "absolute"] | None = None
        if now - row.created_at >= self.absolute:
            reason = "absolute"
        elif now - row.last_seen >= self.idle:
            reason = "idle"
        if reason is not None:
            await self._repo.delete_session(row.id_hash)
            return Ended(row.user_id, reason)
        last_seen = row.last_seen
        if now - row.last_seen >= TOUCH_EVERY:
            await self._repo.touch_session(row.id_hash, now)
            last_seen = now
        stage: Stage = "full" if row.stage == "full" else "mfa"
        return Session(row.id_hash, row.user_id, stage, row.csrf_token, row.created_at, last_seen)

    def clock_time(self) -> float:
        return self._clock.time()

    def ends_at(self, session: Session) -> float:
        """When the server ends this session if no request comes before."""
        return min(session.last_seen + self.idle, session.created_at + self.absolute)

    async def keep_alive(self, session: Session) -> Session:
        """The user asked to stay signed in: the idle time starts again now (never past
        the absolute lifetime)."""
        now = self._clock.time()
        await self._repo.touch_session(session.id_hash, now)
        return Session(
            session.id_hash,
            session.user_id,
            session.stage,
            session.csrf_token,
            session.created_at,
            now,
        )

    async def end(self, session: Session) -> bool:
        return await self._repo.delete_session(session.id_hash)
