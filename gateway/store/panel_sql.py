"""SQL for the panel's tables: users, sessions, login failures, role policies.

Writes go through the store's single writer, reads through its reader connection.
The records these answer are in `gateway/panel_users.py`; the panel reaches this
through the gateway (`Gateway.admin_repo`).
The TOTP secret is encrypted like any personal field (row id and column are
authenticated); session ids are stored only as SHA-256 hashes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from gateway.panel_users import (
    Credentials,
    FailureState,
    Role,
    SessionRow,
    User,
    UserExists,
    undo_reserved,
)
from gateway.store.store import Store

T = TypeVar("T")


_USER_COLUMNS = (
    "id, username, role, totp_enabled, created_at, password_changed_at, disabled_at,"
    " password_hash, totp_secret_ct, totp_last_step, directory_id, role_checked_at"
)
# A directory user's row has this instead of a password hash: it never verifies.
DIRECTORY_PASSWORD = "!directory"  # noqa: S105 - a marker, not a secret


class AdminRepo:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def _one(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Row | None:
        cur = await self._store.reader.execute(sql, params)
        row: sqlite3.Row | None = await cur.fetchone()
        return row

    async def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        cur = await self._store.reader.execute(sql, params)
        return list(await cur.fetchall())

    # -- users ---------------------------------------------------------------------------

    async def add_user(
        self, user_id: str, username: str, role: Role, password_hash: str, now: float
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO users (id, username, role, password_hash, password_changed_at,"
                    " created_at) VALUES (?,?,?,?,?,?)",
                    (user_id, username, role.value, password_hash, now, now),
                )
            except sqlite3.IntegrityError:
                raise UserExists("a user with this name exists") from None

        await self._store.writer.run(job)

    def _user(self, row: sqlite3.Row) -> User:
        return User(
            row[0], row[1], Role(row[2]), bool(row[3]), row[4], row[5], row[6], row[10], row[11]
        )

    def _credentials(self, row: sqlite3.Row) -> Credentials:
        secret = None
        if row[8] is not None:
            secret = self._store.decrypt(row[8], row[0], "totp_secret")
        return Credentials(row[7], secret, row[9])

    async def user_by_name(self, username: str) -> tuple[User, Credentials] | None:
        row = await self._one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE username = ?",  # noqa: S608 - fixed columns
            (username,),
        )
        return None if row is None else (self._user(row), self._credentials(row))

    async def user_by_id(self, user_id: str) -> tuple[User, Credentials] | None:
        row = await self._one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?",  # noqa: S608 - fixed columns
            (user_id,),
        )
        return None if row is None else (self._user(row), self._credentials(row))

    async def user_by_directory_id(self, stable_id: str) -> User | None:
        row = await self._one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE directory_id = ?",  # noqa: S608 - fixed columns
            (stable_id,),
        )
        return None if row is None else self._user(row)

    async def users(self) -> list[User]:
        rows = await self._all(
            f"SELECT {_USER_COLUMNS} FROM users ORDER BY username"  # noqa: S608 - fixed columns
        )
        return [self._user(r) for r in rows]

    async def _update_user(self, sql: str, params: tuple[Any, ...], *, end_sessions: bool) -> bool:
        user_id = params[-1]

        def job(conn: sqlite3.Connection) -> bool:
            changed = conn.execute(sql, params).rowcount == 1
            if changed and end_sessions:
                conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
            return changed

        return await self._store.writer.run(job)

    async def set_password(
        self, user_id: str, password_hash: str, now: float, *, keep_session: bytes | None
    ) -> bool:
        """New password; every session of the user ends except `keep_session`."""

        def job(conn: sqlite3.Connection) -> bool:
            changed = (
                conn.execute(
                    "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ?",
                    (password_hash, now, user_id),
                ).rowcount
                == 1
            )
            conn.execute(
                "DELETE FROM sessions WHERE user_id = ? AND id_hash IS NOT ?",
                (user_id, keep_session),
            )
            return changed

        return await self._store.writer.run(job)

    async def set_role(self, user_id: str, role: Role) -> bool:
        return await self._update_user(
            "UPDATE users SET role = ? WHERE id = ?", (role.value, user_id), end_sessions=True
        )

    async def set_disabled(self, user_id: str, disabled_at: float | None) -> bool:
        return await self._update_user(
            "UPDATE users SET disabled_at = ? WHERE id = ?",
            (disabled_at, user_id),
            end_sessions=disabled_at is not None,
        )

    async def set_totp_secret(self, user_id: str, secret: str | None) -> None:
        """Store a secret being enrolled (not yet enabled), or clear TOTP altogether."""
        blob = None if secret is None else self._store.encrypt(secret, user_id, "totp_secret")
        await self._update_user(
            "UPDATE users SET totp_secret_ct = ?, totp_enabled = 0, totp_last_step = 0"
            " WHERE id = ?",
            (blob, user_id),
            end_sessions=False,
        )

    async def reset_totp(self, user_id: str) -> bool:
        """Remove the second factor (lost phone); the user's sessions end."""
        return await self._update_user(
            "UPDATE users SET totp_secret_ct = NULL, totp_enabled = 0, totp_last_step = 0"
            " WHERE id = ?",
            (user_id,),
            end_sessions=True,
        )

    async def spend_totp_step(self, user_id: str, step: int, *, enable: bool) -> bool:
        """Record `step` as used; False if it (or a later one) was used already."""
        sql = "UPDATE users SET totp_last_step = ?"
        if enable:
            sql += ", totp_enabled = 1"
        sql += " WHERE id = ? AND totp_last_step < ? AND totp_secret_ct IS NOT NULL"
        return await self._store.writer.run(
            lambda conn: conn.execute(sql, (step, user_id, step)).rowcount == 1
        )

    # -- directory users ----------------------------------------------------

    async def upsert_directory_user(
        self, new_id: str, stable_id: str, name: str, role: Role, now: float
    ) -> tuple[str, bool]:
        """The local row of a directory user, by the directory's stable id, made to match
        what the directory says now (name, role), in one transaction. A stale
        directory row holding the name (its owner was renamed) gives it up. Returns the
        row's id and whether its sessions ended (the role changed).
        Raises `UserExists` when a local account has the name."""

        def job(conn: sqlite3.Connection) -> tuple[str, bool]:
            holder = conn.execute(
                "SELECT id, directory_id FROM users WHERE username = ?", (name,)
            ).fetchone()
            if holder is not None and holder[1] is None:
                raise UserExists("a local account has this name")
            if holder is not None and holder[1] != stable_id:
                conn.execute(
                    "UPDATE users SET username = username || '#' || id WHERE id = ?", (holder[0],)
                )
            row = conn.execute(
                "SELECT id, role FROM users WHERE directory_id = ?", (stable_id,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO users (id, username, role, password_hash, password_changed_at,"
                    " created_at, directory_id, role_checked_at) VALUES (?,?,?,?,?,?,?,?)",
                    (new_id, name, role.value, DIRECTORY_PASSWORD, now, now, stable_id, now),
                )
                return new_id, False
            conn.execute(  # disabled_at is left alone: an admin's disable stands
                "UPDATE users SET username = ?, role = ?, role_checked_at = ? WHERE id = ?",
                (name, role.value, now, row[0]),
            )
            changed = row[1] != role.value
            if changed:
                conn.execute("DELETE FROM sessions WHERE user_id = ?", (row[0],))
            return str(row[0]), changed

        return await self._store.writer.run(job)

    async def directory_checked(self, user_id: str, role: Role | None, now: float) -> int:
        """A recheck's answer: the same role keeps the sessions; another role, or none
        (left the groups, disabled, gone), ends them. Returns the sessions ended."""

        def job(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT role FROM users WHERE id = ?", (user_id,)).fetchone()
            if row is None:
                return 0
            if role is not None and row[0] == role.value:
                conn.execute("UPDATE users SET role_checked_at = ? WHERE id = ?", (now, user_id))
                return 0
            # No role: the row stays as it was (the next sign-in asks the directory
            # again); only its sessions end.
            conn.execute(
                "UPDATE users SET role = coalesce(?, role), role_checked_at = ? WHERE id = ?",
                (role.value if role is not None else None, now, user_id),
            )
            ended: int = conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)).rowcount
            return ended

        return await self._store.writer.run(job)

    async def audit_uses(self, action: str, since: float) -> tuple[int, float | None]:
        """How often `action` was audited since `since`, and when last (the dashboard's
        break-glass sign-ins)."""
        row = await self._one(
            "SELECT count(*), max(at) FROM audit_log WHERE action = ? AND at >= ?", (action, since)
        )
        return (int(row[0]), row[1]) if row else (0, None)

    # -- sessions ------------------------------------------------------------------------

    async def replace_session(self, new: SessionRow, old_id_hash: bytes | None) -> None:
        """Insert `new`, deleting `old_id_hash` in the same transaction (id renewal)."""

        def job(conn: sqlite3.Connection) -> None:
            if old_id_hash is not None:
                conn.execute("DELETE FROM sessions WHERE id_hash = ?", (old_id_hash,))
            conn.execute(
                "INSERT INTO sessions VALUES (?,?,?,?,?,?)",
                (
                    new.id_hash,
                    new.user_id,
                    new.stage,
                    new.csrf_token,
                    new.created_at,
                    new.last_seen,
                ),
            )

        await self._store.writer.run(job)

    async def session(self, id_hash: bytes) -> SessionRow | None:
        row = await self._one("SELECT * FROM sessions WHERE id_hash = ?", (id_hash,))
        return None if row is None else SessionRow(*row)

    async def touch_session(self, id_hash: bytes, now: float) -> None:
        await self._store.writer.run(
            lambda conn: conn.execute(
                "UPDATE sessions SET last_seen = ? WHERE id_hash = ?", (now, id_hash)
            )
        )

    async def delete_session(self, id_hash: bytes) -> bool:
        return await self._store.writer.run(
            lambda conn: (
                conn.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,)).rowcount == 1
            )
        )

    async def end_user_sessions(self, user_id: str) -> int:
        return await self._store.writer.run(
            lambda conn: conn.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,)).rowcount
        )

    async def session_count(self, user_id: str) -> int:
        row = await self._one("SELECT count(*) FROM sessions WHERE user_id = ?", (user_id,))
        return int(row[0]) if row else 0

    async def prune(
        self, *, idle_before: float, created_before: float, failed_before: float
    ) -> int:
        """Delete sessions past their time that nobody came back to, and stale failure counts."""

        def job(conn: sqlite3.Connection) -> int:
            ended = conn.execute(
                "DELETE FROM sessions WHERE last_seen < ? OR created_at < ?",
                (idle_before, created_before),
            ).rowcount
            conn.execute(
                "DELETE FROM login_failures WHERE last_failure < ?"
                " AND (locked_until IS NULL OR locked_until < ?)",
                (failed_before, failed_before),
            )
            return int(ended)

        return await self._store.writer.run(job)

    # -- login failures ------------------------------------------------------------------

    async def failures(self, keys: Iterable[str]) -> dict[str, FailureState]:
        keys = list(keys)
        marks = ",".join("?" * len(keys))
        rows = await self._all(
            f"SELECT key, failures, last_failure, locked_until FROM login_failures"  # noqa: S608
            f" WHERE key IN ({marks})",
            tuple(keys),
        )
        found = {r[0]: FailureState(r[1], r[2], r[3]) for r in rows}
        return {k: found.get(k, FailureState()) for k in keys}

    async def reserve_attempt(
        self,
        keys: Sequence[str],
        decide: Callable[[dict[str, FailureState]], tuple[T, Mapping[str, FailureState]]],
    ) -> T:
        """Read the counts under `keys`, let `decide` answer and say what to store, and
        store it, all in one writer transaction: the writer is the store's only writing
        connection and holds SQLite's write lock (BEGIN IMMEDIATE) from the read to the
        commit, so no other attempt, in this process or another, reads in between."""

        def job(conn: sqlite3.Connection) -> T:
            found = {
                row[0]: FailureState(row[1], row[2], row[3])
                for key in keys
                for row in conn.execute(
                    "SELECT key, failures, last_failure, locked_until FROM login_failures"
                    " WHERE key = ?",
                    (key,),
                )
            }
            answer, writes = decide({k: found.get(k, FailureState()) for k in keys})
            conn.executemany(
                "INSERT OR REPLACE INTO login_failures VALUES (?,?,?,?)",
                [(k, s.failures, s.last_failure, s.locked_until) for k, s in writes.items()],
            )
            return answer

        return await self._store.writer.run(job)

    async def settle_attempt(
        self,
        clear: Sequence[str],
        undo: Mapping[str, tuple[FailureState, FailureState]],
    ) -> None:
        """After a success: forget the counts under `clear`; under each `undo` key take
        back the one failure reserved, `(before, after)`: the count goes back to `before`
        if nothing else was counted since, else it only loses one."""

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM login_failures WHERE key = ?", [(k,) for k in clear])
            for key, (before, after) in undo.items():
                row = conn.execute(
                    "SELECT failures, last_failure, locked_until FROM login_failures WHERE key = ?",
                    (key,),
                ).fetchone()
                if row is None:
                    continue
                left = undo_reserved(FailureState(*row), before, after)
                if left is None:
                    conn.execute("DELETE FROM login_failures WHERE key = ?", (key,))
                else:
                    conn.execute(
                        "UPDATE login_failures SET failures = ?, last_failure = ?,"
                        " locked_until = ? WHERE key = ?",
                        (left.failures, left.last_failure, left.locked_until, key),
                    )

        await self._store.writer.run(job)

    async def clear_failures(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        await self._store.writer.run(
            lambda conn: conn.executemany(
                "DELETE FROM login_failures WHERE key = ?", [(k,) for k in keys]
            )
        )

    # -- role policies -------------------------------------------------------------------

    async def totp_required_roles(self) -> frozenset[Role]:
        rows = await self._all("SELECT role FROM role_policies WHERE totp_required = 1")
        return frozenset(Role(r[0]) for r in rows)

    async def set_totp_required(self, roles: Iterable[Role]) -> None:
        wanted = {r.value for r in roles}

        def job(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO role_policies VALUES (?, ?)",
                [(r.value, int(r.value in wanted)) for r in Role],
            )

        await self._store.writer.run(job)
