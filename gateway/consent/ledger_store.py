"""The consent ledger behind one interface, for either backend.

`ConsentLedger` is what the consent use cases (`/optouts`, `/consents`, lookups, the
CSV import and export) need of the ledger: append a decision (with the check that
allows it, in one transaction) or a chunk of an imported list, and read a contact,
its standing and its history. `SqliteLedger`
runs it on the writer of one node's store; `gateway/cluster/consent_store.py` on the
PostgreSQL every node of a cluster shares, so a decision recorded on one node is the
next claim's answer on every other. Each carries its backend's review queue
(`reviews`, `gateway/consent/review_store.py`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Protocol

from gateway.consent import import_rule, ledger
from gateway.consent.ledger import Entry, LedgerRow
from gateway.consent.review_store import ReviewQueue, SqliteReviews
from gateway.store import consent_sql
from gateway.store.consent_sql import Contact, ExportRow, StateRow
from gateway.store.store import Store


class ConsentLedger(Protocol):
    shared: bool  # True: every node of a cluster reads and writes this one ledger
    reviews: ReviewQueue  # the free-text revocations waiting for staff, on this backend

    async def record(self, entry: Entry, *, lifts: bool = False) -> tuple[str, int] | None:
        """Append `entry` and bring the standing up to date in one transaction; (ledger
        id, seq). With `lifts`, only if an opt-out it would lift stands (else None),
        checked in that transaction."""
        ...

    async def import_entries(self, chunk: Sequence[tuple[Entry, bool]]) -> list[str]:
        """Append a chunk of imported (entry, dated) pairs in one transaction by
        `gateway/consent/import_rule.py`; each one's outcome (APPENDED, UNCHANGED or
        SUPERSEDED). Every appended opt-out withdraws the queued messages it stops."""
        ...

    async def contact(self, idx: bytes) -> Contact | None: ...

    async def put_contact(
        self, idx: bytes, number: str, changes: consent_sql.ContactChanges, now: float
    ) -> None:
        """Create the contact if need be and set or clear what `changes` names."""
        ...

    async def states(self, idx: bytes) -> list[StateRow]: ...

    async def history(self, idx: bytes) -> list[LedgerRow]:
        """Every decision about one contact, oldest first (erased texts None)."""
        ...

    async def export_page(self, after_seq: int, limit: int) -> list[ExportRow]: ...


class SqliteLedger:
    """`ConsentLedger` on one node's SQLite store. `after` runs in each appending
    transaction (the withdrawal of queued messages an opt-out stops)."""

    shared = False

    def __init__(self, store: Store, after: Callable[[sqlite3.Connection, Entry], object]) -> None:
        self._store = store
        self._after = after
        self.reviews: ReviewQueue = SqliteReviews(store)

    async def record(self, entry: Entry, *, lifts: bool = False) -> tuple[str, int] | None:
        cipher = consent_sql.cipher_of(self._store)
        after = self._after

        def job(conn: sqlite3.Connection) -> tuple[str, int] | None:
            idx, program, scope = entry.contact_idx, entry.program, entry.scope
            if lifts and not consent_sql.has_opt_out(conn, idx, program, scope):
                return None
            done = ledger.append(conn, cipher, entry)
            after(conn, entry)
            return done

        return await self._store.writer.run(job)

    async def import_entries(self, chunk: Sequence[tuple[Entry, bool]]) -> list[str]:
        cipher = consent_sql.cipher_of(self._store)
        after = self._after

        def job(conn: sqlite3.Connection) -> list[str]:
            outcomes = consent_sql.import_entries(conn, cipher, chunk)
            for (entry, _), outcome in zip(chunk, outcomes, strict=True):
                if outcome != import_rule.UNCHANGED:
                    after(conn, entry)
            return outcomes

        return await self._store.writer.run(job)

    async def contact(self, idx: bytes) -> Contact | None:
        return await consent_sql.contact(self._store, idx)

    async def put_contact(
        self, idx: bytes, number: str, changes: consent_sql.ContactChanges, now: float
    ) -> None:
        cipher = consent_sql.cipher_of(self._store)
        await self._store.writer.run(
            lambda conn: consent_sql.put_contact(conn, cipher, idx, number, changes, now)
        )

    async def states(self, idx: bytes) -> list[StateRow]:
        return await consent_sql.states(self._store, idx)

    async def history(self, idx: bytes) -> list[LedgerRow]:
        return await consent_sql.history(self._store, idx)

    async def export_page(self, after_seq: int, limit: int) -> list[ExportRow]:
        return await consent_sql.export_page(self._store, after_seq, limit)
