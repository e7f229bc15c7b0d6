"""Inbound records a driver received but could not decode, held for an operator.

Theory of operation. A modem's SIM record that no codec can read may still be a
patient's message, so it is never simply dropped: the driver hands the raw record (the
PDU hex as the modem gave it) to the sink, which holds it here, and only after this
commit does the driver delete the SIM's copy. The record is patient data: it is
encrypted like the `inbound` table's fields (AES-GCM, the row id and column `record`
as associated data). A keyed digest over route, source (the modem's configured name)
and record makes a record read again — a crash, or a failed AT+CMGD, between this
commit and the deletion — held once.

`hold` and `summary` run on the writer thread, so a summary taken after a hold always
counts it. Nothing here logs, and no exception carries the record.
"""

from __future__ import annotations

import sqlite3

import msgspec

from gateway.models import new_message_id
from gateway.store.crypto import FieldCipher
from gateway.store.store import Store

__all__ = ["HeldRecord", "HeldUndecodable", "Quarantine"]

_PURPOSE = "inbound-undecodable"


class HeldUndecodable(msgspec.Struct, frozen=True):
    """What operators see of the quarantine: how many records, since when (Unix time)."""

    held: int
    oldest_at: float | None


class HeldRecord(msgspec.Struct, frozen=True):
    id: str
    route: str
    source: str
    received_at: float


class Quarantine:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _cipher(self) -> FieldCipher:
        cipher = self._store.cipher
        if cipher is None:
            raise RuntimeError("the store is not open")
        return cipher

    async def hold(self, route: str, source: str, record: str, now: float) -> str | None:
        """Hold `record` durably; its id, or None if the same record was already held."""
        cipher = self._cipher()
        row_id = new_message_id()
        row = (
            row_id,
            route,
            source,
            cipher.encrypt(record, row_id, "record"),
            cipher.keyed_digest(_PURPOSE, route, source, record),
            now,
        )

        def insert(conn: sqlite3.Connection) -> str | None:
            inserted = conn.execute(
                "INSERT OR IGNORE INTO inbound_undecodable"
                " (id, route, source, record_ct, digest, received_at) VALUES (?,?,?,?,?,?)",
                row,
            ).rowcount
            return row_id if inserted else None

        held: str | None = await self._store.writer.run(insert)
        return held

    async def summary(self) -> HeldUndecodable:
        def count(conn: sqlite3.Connection) -> HeldUndecodable:
            held, oldest = conn.execute(
                "SELECT count(*), min(received_at) FROM inbound_undecodable"
            ).fetchone()
            return HeldUndecodable(int(held), oldest)

        summary: HeldUndecodable = await self._store.writer.run(count)
        return summary

    async def held(self) -> list[HeldRecord]:
        """Every held record, oldest first, without its content."""

        def read(conn: sqlite3.Connection) -> list[HeldRecord]:
            rows = conn.execute(
                "SELECT id, route, source, received_at FROM inbound_undecodable"
                " ORDER BY received_at, id"
            ).fetchall()
            return [HeldRecord(*row) for row in rows]

        held: list[HeldRecord] = await self._store.writer.run(read)
        return held

    async def records(self) -> list[tuple[HeldRecord, str]]:
        """Every held record with its content decrypted, oldest first: an operator's
        export (the caller audits it)."""
        cipher = self._cipher()

        def read(conn: sqlite3.Connection) -> list[tuple[HeldRecord, bytes]]:
            rows = conn.execute(
                "SELECT id, route, source, received_at, record_ct FROM inbound_undecodable"
                " ORDER BY received_at, id"
            ).fetchall()
            return [(HeldRecord(*row[:4]), row[4]) for row in rows]

        rows: list[tuple[HeldRecord, bytes]] = await self._store.writer.run(read)
        return [(held, cipher.decrypt(ct, held.id, "record")) for held, ct in rows]

    async def release(self, record_id: str) -> bool:
        """Forget one record an operator has dealt with; False if there is none."""

        def delete(conn: sqlite3.Connection) -> bool:
            gone = conn.execute("DELETE FROM inbound_undecodable WHERE id = ?", (record_id,))
            return gone.rowcount > 0

        released: bool = await self._store.writer.run(delete)
        return released
