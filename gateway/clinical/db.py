"""Where the clinical rows live: the node's SQLite store, or on a cluster the shared
PostgreSQL (`gateway/cluster/clinical_db.py`).

Patients, appointments and their trail, timed notices, reminder rules and templates
are written by jobs: plain functions over a DB-API connection with `?` placeholders
(`gateway/appointments/machine.py`, `gateway/clinical/notices.py`, ...). SQLite runs
a job in its writer transaction; the cluster runs the same job in one PostgreSQL
transaction, so both backends share one set of SQL and one state machine. A job may
only use SQL both engines read alike (no `WHERE 1`, no bare boolean columns).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol, TypeVar

from gateway.clinical.commands import LockKey
from gateway.store.consent_sql import cipher_of
from gateway.store.crypto import FieldCipher
from gateway.store.store import Store

T = TypeVar("T")
Row = Sequence[Any]


class ClinicalDb(Protocol):
    """The clinical tables' transactions and reads, on one backend."""

    # True on a cluster: an audit entry is written after the shared commit (the
    # node's trail is its own SQLite), not inside the job.
    shared: bool
    # Run after each committed job (the notice runner's "planned something" check).
    after_commit: list[Callable[[], None]]

    @property
    def cipher(self) -> FieldCipher:
        """Seals and opens the clinical rows' encrypted columns (the shared keyring's
        on a cluster)."""
        ...

    async def run(
        self,
        job: Callable[[sqlite3.Connection], T],
        *,
        serial: bool = True,
        keys: Collection[LockKey] | None = None,
    ) -> T:
        """`job` in one transaction, committed when it returns. `serial`: one such job
        at a time across the site (SQLite's writer is one already; a cluster takes a
        lock), as a check-then-act of the state machine needs. `keys`: the job's
        changes stay within these (`commands.Keyed`): on a cluster it then waits only
        for jobs naming one of them, and for the jobs that take the lock whole."""
        ...

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...


class LocalClinicalDb:
    """`ClinicalDb` on the node's own SQLite store."""

    shared = False

    def __init__(self, store: Store) -> None:
        self._store = store
        self.after_commit = store.writer.after_commit

    @property
    def cipher(self) -> FieldCipher:
        return cipher_of(self._store)

    async def run(
        self,
        job: Callable[[sqlite3.Connection], T],
        *,
        serial: bool = True,
        keys: Collection[LockKey] | None = None,
    ) -> T:
        return await self._store.writer.run(job)

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(await self._store.reader.all(sql, params))

    async def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return await self._store.reader.one(sql, params)
