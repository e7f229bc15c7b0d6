"""The panel's users, roles, sessions and sign-in failure counts, as records.

Shared by the store's SQL for these tables (`gateway/store/panel_sql.py`) and the
panel (`gateway/admin/`), which imports nothing from the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"  # everything
    OPERATOR = "operator"  # send, cancel, retry, pause routes; audited reveal of PHI
    VIEWER = "viewer"  # dashboards and counts, never PHI
    AUDITOR = "auditor"  # the audit trail, no PHI


class UserExists(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    role: Role
    totp_enabled: bool
    created_at: float
    password_changed_at: float
    disabled_at: float | None
    # set for a directory user (the directory's stable id), None for a local one.
    directory_id: str | None = None
    role_checked_at: float | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    @property
    def from_directory(self) -> bool:
        return self.directory_id is not None


@dataclass(frozen=True, slots=True)
class Credentials:
    password_hash: str
    totp_secret: str | None
    totp_last_step: int


@dataclass(frozen=True, slots=True)
class SessionRow:
    id_hash: bytes
    user_id: str
    stage: str
    csrf_token: str
    created_at: float
    last_seen: float


@dataclass(frozen=True, slots=True)
class FailureState:
    failures: int = 0
    last_failure: float = 0.0
    locked_until: float | None = None


def undo_reserved(
    found: FailureState, before: FailureState, after: FailureState
) -> FailureState | None:
    """A key's counts once the failure reserved for a sign-in that then succeeded is
    taken back (`settle_attempt`, either backend): back to `before` if nothing else was
    counted since (None: no row at all), else only one failure fewer."""
    if found != after:
        return FailureState(max(found.failures - 1, 0), found.last_failure, found.locked_until)
    return None if before.failures == 0 else before
