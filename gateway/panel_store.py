"""Where the panel's users, sessions, sign-in failure counts and role policies are kept.

Two implementations: the node's own SQLite tables (`gateway/store/panel_sql.py`) and,
on a cluster, PostgreSQL tables every node shares (`gateway/cluster/panel.py`), so a
user, a password change, a lockout or a session made on one node holds on all of them.
The panel (`gateway/admin/`) and the console see only this interface.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, TypeVar

from gateway.panel_users import Credentials, FailureState, Role, SessionRow, User

T = TypeVar("T")


class PanelStore(Protocol):
    # -- users ---------------------------------------------------------------------------

    async def add_user(
        self, user_id: str, username: str, role: Role, password_hash: str, now: float
    ) -> None: ...

    async def user_by_name(self, username: str) -> tuple[User, Credentials] | None: ...

    async def user_by_id(self, user_id: str) -> tuple[User, Credentials] | None: ...

    async def user_by_directory_id(self, stable_id: str) -> User | None: ...

    async def users(self) -> list[User]: ...

    async def set_password(
        self, user_id: str, password_hash: str, now: float, *, keep_session: bytes | None
    ) -> bool: ...

    async def set_role(self, user_id: str, role: Role) -> bool: ...

    async def set_disabled(self, user_id: str, disabled_at: float | None) -> bool: ...

    async def set_totp_secret(self, user_id: str, secret: str | None) -> None: ...

    async def reset_totp(self, user_id: str) -> bool: ...

    async def spend_totp_step(self, user_id: str, step: int, *, enable: bool) -> bool: ...

    async def upsert_directory_user(
        self, new_id: str, stable_id: str, name: str, role: Role, now: float
    ) -> tuple[str, bool]: ...

    async def directory_checked(self, user_id: str, role: Role | None, now: float) -> int: ...

    async def audit_uses(self, action: str, since: float) -> tuple[int, float | None]: ...

    # -- sessions ------------------------------------------------------------------------

    async def replace_session(self, new: SessionRow, old_id_hash: bytes | None) -> None: ...

    async def session(self, id_hash: bytes) -> SessionRow | None: ...

    async def touch_session(self, id_hash: bytes, now: float) -> None: ...

    async def delete_session(self, id_hash: bytes) -> bool: ...

    async def end_user_sessions(self, user_id: str) -> int: ...

    async def session_count(self, user_id: str) -> int: ...

    async def prune(
        self, *, idle_before: float, created_before: float, failed_before: float
    ) -> int: ...

    # -- login failures ------------------------------------------------------------------

    async def failures(self, keys: Iterable[str]) -> dict[str, FailureState]: ...

    async def reserve_attempt(
        self,
        keys: Sequence[str],
        decide: Callable[[dict[str, FailureState]], tuple[T, Mapping[str, FailureState]]],
    ) -> T: ...

    async def settle_attempt(
        self,
        clear: Sequence[str],
        undo: Mapping[str, tuple[FailureState, FailureState]],
    ) -> None: ...

    async def clear_failures(self, keys: Iterable[str]) -> None: ...

    # -- role policies -------------------------------------------------------------------

    async def totp_required_roles(self) -> frozenset[Role]: ...

    async def set_totp_required(self, roles: Iterable[Role]) -> None: ...
