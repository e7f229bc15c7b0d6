"""The panel's users, sessions, sign-in failure counts and role policies, shared by
every node: the `panel_*` tables in PostgreSQL.

The same rows and methods as SQLite's (`gateway/store/panel_sql.py`), so a user added,
a password changed, TOTP enrolled or an account locked on node A holds on node B, and a
session cookie made on A is valid on B until it times out or is signed out on either.
The TOTP secret stays encrypted under the shared keyring's field cipher, bound to the
user's id and column as in SQLite (so a copied-up ciphertext decrypts as it is).

Sign-in throttling stays one check-then-act across nodes: `reserve_attempt` takes a
transaction-scoped advisory lock per failure key (in a fixed order) before it reads
the counts and holds it until the new counts commit, so attempts on every node queue
on the count exactly as SQLite's single writer makes them queue on one node.

The users already in a node's own SQLite at its first start on a cluster (the copied
data directory of the documented setup) are copied up once per node id
(`copy_local_once`); a shared row is replaced only by a local one whose password
changed later, and a local user whose name another shared user holds is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster.lease import Pool
from gateway.cluster.shared_keys import KeyringWatch
from gateway.panel_users import (
    Credentials,
    FailureState,
    Role,
    SessionRow,
    User,
    UserExists,
    undo_reserved,
)
from gateway.store import crypto
from gateway.store.panel_sql import DIRECTORY_PASSWORD, AdminRepo
from gateway.store.reads import ReadPool

T = TypeVar("T")
log = structlog.get_logger("smsgw.cluster")

# pg_advisory_xact_lock(class, key) classes: "smsgw" + 8 (this migration's number).
FAILURE_LOCK = 0x736D7308
DIRECTORY_LOCK = 0x736D7309  # one directory upsert at a time (a rename moves two rows)
COPY_LOCK = 0x736D730A  # nodes starting together copy up one after the other

_USER_COLUMNS = (
    "id, username, role, totp_enabled, created_at, password_changed_at, disabled_at,"
    " password_hash, totp_secret_ct, totp_last_step, directory_id, role_checked_at"
)
_SESSION_COLUMNS = "id_hash, user_id, stage, csrf_token, created_at, last_seen"


def _user(row: Sequence[Any]) -> User:
    return User(
        row[0], row[1], Role(row[2]), bool(row[3]), row[4], row[5], row[6], row[10], row[11]
    )


def _session(row: Sequence[Any]) -> SessionRow:
    return SessionRow(bytes(row[0]), row[1], row[2], row[3], row[4], row[5])


async def _lock_keys(conn: AsyncConnection[TupleRow], keys: Iterable[str]) -> None:
    for key in sorted(set(keys)):  # one order on every node: no deadlock
        await conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (FAILURE_LOCK, key))


class ClusterPanel:
    """`PanelStore` on the shared tables; `local` answers what stays per node (its
    audit trail)."""

    def __init__(
        self,
        pool: Pool,
        cipher: crypto.FieldCipher,
        keys: KeyringWatch,
        local: AdminRepo,
        node_id: str = "",
    ) -> None:
        self._pool = pool
        self._cipher = cipher
        self._keys = keys
        self._local = local
        self._node_id = node_id  # whose entries `audit_uses` reads from `local`

    def csrf_key(self) -> bytes:
        """The login form's CSRF key, the same on every node (the shared keyring's)."""
        return self._cipher.keyed_digest("panel pre-session csrf")

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql.encode(), params)).fetchall()

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    async def _count(self, sql: str, params: Sequence[Any]) -> int:
        async with self._pool.connection() as conn:
            return (await conn.execute(sql.encode(), params)).rowcount

    # -- users ---------------------------------------------------------------------------

    async def add_user(
        self, user_id: str, username: str, role: Role, password_hash: str, now: float
    ) -> None:
        try:
            await self._count(
                "INSERT INTO panel_users (id, username, role, password_hash,"
                " password_changed_at, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (user_id, username, role.value, password_hash, now, now),
            )
        except psycopg.errors.UniqueViolation:
            raise UserExists("a user with this name exists") from None

    async def _credentials(self, row: Sequence[Any]) -> Credentials:
        secret = None
        if row[8] is not None:
            blob = bytes(row[8])
            if crypto.header_generation(blob) not in self._cipher.generations:
                await self._keys.check()  # rotated on another node since our last beat
            secret = self._cipher.decrypt(blob, row[0], "totp_secret")
        return Credentials(row[7], secret, row[9])

    async def _found(self, row: Sequence[Any] | None) -> tuple[User, Credentials] | None:
        return None if row is None else (_user(row), await self._credentials(row))

    async def user_by_name(self, username: str) -> tuple[User, Credentials] | None:
        return await self._found(
            await self._one(
                f"SELECT {_USER_COLUMNS} FROM panel_users WHERE lower(username) = lower(%s)",  # noqa: S608 - fixed columns
                (username,),
            )
        )

    async def user_by_id(self, user_id: str) -> tuple[User, Credentials] | None:
        return await self._found(
            await self._one(
                f"SELECT {_USER_COLUMNS} FROM panel_users WHERE id = %s",  # noqa: S608 - fixed columns
                (user_id,),
            )
        )

    async def user_by_directory_id(self, stable_id: str) -> User | None:
        row = await self._one(
            f"SELECT {_USER_COLUMNS} FROM panel_users WHERE directory_id = %s",  # noqa: S608 - fixed columns
            (stable_id,),
        )
        return None if row is None else _user(row)

    async def users(self) -> list[User]:
        rows = await self._all(
            f"SELECT {_USER_COLUMNS} FROM panel_users ORDER BY lower(username)"  # noqa: S608 - fixed columns
        )
        return [_user(r) for r in rows]

    async def _update_user(self, sql: str, params: tuple[Any, ...], *, end_sessions: bool) -> bool:
        user_id = params[-1]
        async with self._pool.connection() as conn, conn.transaction():
            changed = (await conn.execute(sql.encode(), params)).rowcount == 1
            if changed and end_sessions:
                await conn.execute("DELETE FROM panel_sessions WHERE user_id = %s", (user_id,))
            return changed

    async def set_password(
        self, user_id: str, password_hash: str, now: float, *, keep_session: bytes | None
    ) -> bool:
        """New password; every session of the user, on every node, ends except
        `keep_session`."""
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE panel_users SET password_hash = %s, password_changed_at = %s WHERE id = %s",
                (password_hash, now, user_id),
            )
            await conn.execute(
                "DELETE FROM panel_sessions WHERE user_id = %s AND id_hash IS DISTINCT FROM %s",
                (user_id, keep_session),
            )
            return cur.rowcount == 1

    async def set_role(self, user_id: str, role: Role) -> bool:
        return await self._update_user(
            "UPDATE panel_users SET role = %s WHERE id = %s",
            (role.value, user_id),
            end_sessions=True,
        )

    async def set_disabled(self, user_id: str, disabled_at: float | None) -> bool:
        return await self._update_user(
            "UPDATE panel_users SET disabled_at = %s WHERE id = %s",
            (disabled_at, user_id),
            end_sessions=disabled_at is not None,
        )

    async def set_totp_secret(self, user_id: str, secret: str | None) -> None:
        blob = None if secret is None else self._cipher.encrypt(secret, user_id, "totp_secret")
        await self._update_user(
            "UPDATE panel_users SET totp_secret_ct = %s, totp_enabled = false,"
            " totp_last_step = 0 WHERE id = %s",
            (blob, user_id),
            end_sessions=False,
        )

    async def reset_totp(self, user_id: str) -> bool:
        return await self._update_user(
            "UPDATE panel_users SET totp_secret_ct = NULL, totp_enabled = false,"
            " totp_last_step = 0 WHERE id = %s",
            (user_id,),
            end_sessions=True,
        )

    async def spend_totp_step(self, user_id: str, step: int, *, enable: bool) -> bool:
        """Record `step` as used; False if it (or a later one) was used already, on any
        node (one UPDATE)."""
        sql = "UPDATE panel_users SET totp_last_step = %s"
        if enable:
            sql += ", totp_enabled = true"
        sql += " WHERE id = %s AND totp_last_step < %s AND totp_secret_ct IS NOT NULL"
        return await self._count(sql, (step, user_id, step)) == 1

    # -- directory users ----------------------------------------------------------------

    async def upsert_directory_user(
        self, new_id: str, stable_id: str, name: str, role: Role, now: float
    ) -> tuple[str, bool]:
        """As `AdminRepo.upsert_directory_user`, one at a time across the nodes."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (DIRECTORY_LOCK,))
            holder = await (
                await conn.execute(
                    "SELECT id, directory_id FROM panel_users WHERE lower(username) = lower(%s)",
                    (name,),
                )
            ).fetchone()
            if holder is not None and holder[1] is None:
                raise UserExists("a local account has this name")
            if holder is not None and holder[1] != stable_id:
                await conn.execute(
                    "UPDATE panel_users SET username = username || '#' || id WHERE id = %s",
                    (holder[0],),
                )
            row = await (
                await conn.execute(
                    "SELECT id, role FROM panel_users WHERE directory_id = %s", (stable_id,)
                )
            ).fetchone()
            if row is None:
                await conn.execute(
                    "INSERT INTO panel_users (id, username, role, password_hash,"
                    " password_changed_at, created_at, directory_id, role_checked_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (new_id, name, role.value, DIRECTORY_PASSWORD, now, now, stable_id, now),
                )
                return new_id, False
            await conn.execute(  # disabled_at is left alone: an admin's disable stands
                "UPDATE panel_users SET username = %s, role = %s, role_checked_at = %s"
                " WHERE id = %s",
                (name, role.value, now, row[0]),
            )
            changed = row[1] != role.value
            if changed:
                await conn.execute("DELETE FROM panel_sessions WHERE user_id = %s", (row[0],))
            return str(row[0]), changed

    async def directory_checked(self, user_id: str, role: Role | None, now: float) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(
                    "SELECT role FROM panel_users WHERE id = %s FOR UPDATE", (user_id,)
                )
            ).fetchone()
            if row is None:
                return 0
            if role is not None and row[0] == role.value:
                await conn.execute(
                    "UPDATE panel_users SET role_checked_at = %s WHERE id = %s", (now, user_id)
                )
                return 0
            await conn.execute(
                "UPDATE panel_users SET role = coalesce(%s, role), role_checked_at = %s"
                " WHERE id = %s",
                (role.value if role is not None else None, now, user_id),
            )
            cur = await conn.execute("DELETE FROM panel_sessions WHERE user_id = %s", (user_id,))
            return cur.rowcount

    async def audit_uses(self, action: str, since: float) -> tuple[int, float | None]:
        """Every node's uses (the dashboard's break-glass sign-ins): this node's from its
        own trail, at once; the others' from their chains in the shared store (copied at
        each of their heartbeats)."""
        mine, my_last = await self._local.audit_uses(action, since)
        row = await self._one(
            "SELECT count(*), max(at) FROM audit_log WHERE at >= %s AND action = %s"
            " AND node_id <> %s",
            (since, action, self._node_id),
        )
        theirs, their_last = (int(row[0]), row[1]) if row else (0, None)
        lasts = [t for t in (my_last, their_last) if t is not None]
        return mine + theirs, max(lasts) if lasts else None

    # -- sessions ------------------------------------------------------------------------

    async def replace_session(self, new: SessionRow, old_id_hash: bytes | None) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            if old_id_hash is not None:
                await conn.execute("DELETE FROM panel_sessions WHERE id_hash = %s", (old_id_hash,))
            await conn.execute(
                f"INSERT INTO panel_sessions ({_SESSION_COLUMNS})"  # noqa: S608 - fixed columns
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    new.id_hash,
                    new.user_id,
                    new.stage,
                    new.csrf_token,
                    new.created_at,
                    new.last_seen,
                ),
            )

    async def session(self, id_hash: bytes) -> SessionRow | None:
        row = await self._one(
            f"SELECT {_SESSION_COLUMNS} FROM panel_sessions WHERE id_hash = %s",  # noqa: S608 - fixed columns
            (id_hash,),
        )
        return None if row is None else _session(row)

    async def touch_session(self, id_hash: bytes, now: float) -> None:
        # greatest(): a slower node's clock never moves the idle time back.
        await self._count(
            "UPDATE panel_sessions SET last_seen = greatest(last_seen, %s) WHERE id_hash = %s",
            (now, id_hash),
        )

    async def delete_session(self, id_hash: bytes) -> bool:
        return await self._count("DELETE FROM panel_sessions WHERE id_hash = %s", (id_hash,)) == 1

    async def end_user_sessions(self, user_id: str) -> int:
        return await self._count("DELETE FROM panel_sessions WHERE user_id = %s", (user_id,))

    async def session_count(self, user_id: str) -> int:
        row = await self._one("SELECT count(*) FROM panel_sessions WHERE user_id = %s", (user_id,))
        return int(row[0]) if row else 0

    async def prune(
        self, *, idle_before: float, created_before: float, failed_before: float
    ) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            cur = await conn.execute(
                "DELETE FROM panel_sessions WHERE last_seen < %s OR created_at < %s",
                (idle_before, created_before),
            )
            await conn.execute(
                "DELETE FROM panel_login_failures WHERE last_failure < %s"
                " AND (locked_until IS NULL OR locked_until < %s)",
                (failed_before, failed_before),
            )
            return cur.rowcount

    # -- login failures ------------------------------------------------------------------

    async def failures(self, keys: Iterable[str]) -> dict[str, FailureState]:
        keys = list(keys)
        rows = await self._all(
            "SELECT key, failures, last_failure, locked_until FROM panel_login_failures"
            " WHERE key = ANY(%s)",
            (keys,),
        )
        found = {r[0]: FailureState(r[1], r[2], r[3]) for r in rows}
        return {k: found.get(k, FailureState()) for k in keys}

    async def reserve_attempt(
        self,
        keys: Sequence[str],
        decide: Callable[[dict[str, FailureState]], tuple[T, Mapping[str, FailureState]]],
    ) -> T:
        """Read the counts under `keys`, let `decide` answer, store what it says: one
        transaction holding every key's lock from the read to the commit, so no attempt
        on any node reads the counts in between."""
        async with self._pool.connection() as conn, conn.transaction():
            await _lock_keys(conn, keys)
            rows = await (
                await conn.execute(
                    "SELECT key, failures, last_failure, locked_until FROM panel_login_failures"
                    " WHERE key = ANY(%s)",
                    (list(keys),),
                )
            ).fetchall()
            found = {r[0]: FailureState(r[1], r[2], r[3]) for r in rows}
            answer, writes = decide({k: found.get(k, FailureState()) for k in keys})
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO panel_login_failures (key, failures, last_failure, locked_until)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET"
                    " failures = excluded.failures, last_failure = excluded.last_failure,"
                    " locked_until = excluded.locked_until",
                    [(k, s.failures, s.last_failure, s.locked_until) for k, s in writes.items()],
                )
            return answer

    async def settle_attempt(
        self,
        clear: Sequence[str],
        undo: Mapping[str, tuple[FailureState, FailureState]],
    ) -> None:
        """As `AdminRepo.settle_attempt`, under the keys' locks."""
        async with self._pool.connection() as conn, conn.transaction():
            await _lock_keys(conn, [*clear, *undo])
            for key in clear:
                await conn.execute("DELETE FROM panel_login_failures WHERE key = %s", (key,))
            for key, (before, after) in undo.items():
                row = await (
                    await conn.execute(
                        "SELECT failures, last_failure, locked_until FROM panel_login_failures"
                        " WHERE key = %s",
                        (key,),
                    )
                ).fetchone()
                if row is None:
                    continue
                left = undo_reserved(FailureState(*row), before, after)
                if left is None:
                    await conn.execute("DELETE FROM panel_login_failures WHERE key = %s", (key,))
                else:
                    await conn.execute(
                        "UPDATE panel_login_failures SET failures = %s, last_failure = %s,"
                        " locked_until = %s WHERE key = %s",
                        (left.failures, left.last_failure, left.locked_until, key),
                    )

    async def clear_failures(self, keys: Iterable[str]) -> None:
        await self._count("DELETE FROM panel_login_failures WHERE key = ANY(%s)", (list(keys),))

    # -- role policies -------------------------------------------------------------------

    async def totp_required_roles(self) -> frozenset[Role]:
        rows = await self._all("SELECT role FROM panel_role_policies WHERE totp_required")
        return frozenset(Role(r[0]) for r in rows)

    async def set_totp_required(self, roles: Iterable[Role]) -> None:
        wanted = {r.value for r in roles}
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO panel_role_policies (role, totp_required) VALUES (%s, %s)"
                " ON CONFLICT (role) DO UPDATE SET totp_required = excluded.totp_required",
                [(r.value, r.value in wanted) for r in Role],
            )

    # -- the node's own users, once ------------------------------------------------------

    async def copy_local_once(self, local: ReadPool, node_id: str, now: float) -> int | None:
        """Copy the users and role policies of this node's SQLite up, the first time
        `node_id` starts on the cluster; how many users were written (None: done before).
        A shared user is replaced only by a local row whose password changed later."""
        users = await local.all(
            "SELECT id, username, role, password_hash, password_changed_at, totp_secret_ct,"
            " totp_enabled, totp_last_step, created_at, disabled_at, directory_id,"
            " role_checked_at FROM users"
        )
        policies = await local.all("SELECT role, totp_required FROM role_policies")
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (COPY_LOCK,))
            first = await conn.execute(
                "INSERT INTO panel_copied_up (node_id, at) VALUES (%s, %s)"
                " ON CONFLICT (node_id) DO NOTHING",
                (node_id, now),
            )
            if first.rowcount == 0:
                return None
            written = 0
            for u in users:
                cur = await conn.execute(
                    "INSERT INTO panel_users (id, username, role, password_hash,"
                    " password_changed_at, totp_secret_ct, totp_enabled, totp_last_step,"
                    " created_at, disabled_at, directory_id, role_checked_at)"
                    " SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
                    " WHERE NOT EXISTS (SELECT 1 FROM panel_users WHERE id <> %s AND"
                    " (lower(username) = lower(%s) OR directory_id = %s))"
                    " ON CONFLICT (id) DO UPDATE SET password_hash = excluded.password_hash,"
                    " password_changed_at = excluded.password_changed_at,"
                    " totp_secret_ct = excluded.totp_secret_ct,"
                    " totp_enabled = excluded.totp_enabled,"
                    " totp_last_step = greatest(panel_users.totp_last_step,"
                    " excluded.totp_last_step)"
                    " WHERE panel_users.password_changed_at < excluded.password_changed_at",
                    (
                        u[0],
                        u[1],
                        u[2],
                        u[3],
                        u[4],
                        None if u[5] is None else bytes(u[5]),
                        bool(u[6]),
                        u[7],
                        u[8],
                        u[9],
                        u[10],
                        u[11],
                        u[0],
                        u[1],
                        u[10],
                    ),
                )
                written += cur.rowcount
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO panel_role_policies (role, totp_required) VALUES (%s, %s)"
                    " ON CONFLICT (role) DO NOTHING",
                    [(p[0], bool(p[1])) for p in policies],
                )
        log.info("panel_users_copied", node=node_id, local=len(users), written=written)
        return written
