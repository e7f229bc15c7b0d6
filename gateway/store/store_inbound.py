"""The SQLite store's inbound messages: a whole one stored (once, with its mark in doubt:
`gateway/inbound_doubt.py`), and the parts of a concatenated one held until it is whole
(`inbound_parts.py`). A part of `Store`, apart so that the facade stays one screenful
of concerns."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from drivers.base import InboundSms
from gateway.inbound_doubt import DIGEST_PURPOSE, Marked, Settle, StoredOnce
from gateway.store import inbound_doubt_sql, inbound_parts, outbox_sql

if TYPE_CHECKING:
    from gateway.store import crypto
    from gateway.store.reads import ReadPool
    from gateway.store.writer import GroupCommitWriter, Statement


class InboundRows:
    """`Store`'s inbound methods; `Store` gives them its writer, reader and cipher."""

    writer: GroupCommitWriter
    cipher: crypto.FieldCipher | None
    _doubt_owner: str

    @property
    def _crypto(self) -> crypto.FieldCipher:
        raise NotImplementedError  # Store's

    @property
    def reader(self) -> ReadPool:
        raise NotImplementedError  # Store's

    async def insert_inbound(
        self,
        inbound_id: str,
        route: str,
        sender: str,
        body: str,
        recipient: str | None,
        carrier_id: str | None,
        now: float,
        *,
        incomplete: bool = False,
        then: inbound_parts.InboundHook | None = None,
        again: bool = False,
    ) -> bool:
        """Store one whole inbound message; `then` runs in the same transaction. With
        `again`, nothing if the id is stored already (False): its `then` ran with it."""
        statement = inbound_parts.inbound_statement(
            self._crypto,
            inbound_id,
            route,
            sender,
            body,
            recipient,
            carrier_id,
            now,
            incomplete=incomplete,
        )
        rows = [statement, outbox_sql.inbound_statement(inbound_id, route, now)]
        if then is None and not again:
            await self.writer.insert(rows)
            return True
        stored = inbound_parts.StoredInbound(inbound_id, route, sender, body, recipient, now)

        def job(conn: sqlite3.Connection) -> bool:
            if (
                again
                and conn.execute("SELECT 1 FROM inbound WHERE id = ?", (inbound_id,)).fetchone()
            ):
                return False
            for sql, params in rows:
                conn.execute(sql, params)
            if then is not None:
                then(conn, stored)
            return True

        return await self.writer.run(job)

    def inbound_digest(self, scope: str, sender: str, recipient: str | None, body: str) -> bytes:
        """The keyed digest a delivery's mark in doubt is kept under (`inbound_doubt.py`)."""
        cipher = self.cipher
        assert cipher is not None, "store is not open"
        return cipher.keyed_digest(DIGEST_PURPOSE, scope, sender, recipient or "", body)

    async def insert_inbound_once(
        self,
        inbound_id: str,
        route: str,
        sender: str,
        body: str,
        recipient: str | None,
        carrier_id: str | None,
        now: float,
        marked: Marked,
        *,
        then: inbound_parts.InboundHook | None = None,
    ) -> StoredOnce:
        """Store one whole inbound message with its mark in doubt, under the id of an
        earlier delivery in doubt with its digest if there is one (nothing stored if
        that one was); what `marked.settle` carries rides the same transaction."""
        c, owner = self._crypto, self._doubt_owner

        def rows(iid: str) -> list[Statement]:
            statement = inbound_parts.inbound_statement(
                c, iid, route, sender, body, recipient, carrier_id, now
            )
            return [statement, outbox_sql.inbound_statement(iid, route, now)]

        sealed = rows(inbound_id)  # here, not on the writer's thread: the common case

        def job(conn: sqlite3.Connection) -> StoredOnce:
            inbound_doubt_sql.settle(conn, marked.settle, owner)
            earlier = inbound_doubt_sql.take(conn, marked.digest, now - marked.keep, owner)
            if (
                earlier is not None
                and conn.execute("SELECT 1 FROM inbound WHERE id = ?", (earlier,)).fetchone()
            ):
                return StoredOnce(earlier, False)
            iid = inbound_id if earlier is None else earlier
            for sql, params in sealed if earlier is None else rows(earlier):
                conn.execute(sql, params)
            inbound_doubt_sql.mark(conn, marked.digest, iid, now, owner)
            if then is not None:
                then(conn, inbound_parts.StoredInbound(iid, route, sender, body, recipient, now))
            return StoredOnce(iid, True)

        return await self.writer.run(job)

    async def settle_inbound_doubt(self, settle: Settle) -> None:
        """Clears and flags of marks in doubt, riding the next commit (lazily)."""
        owner = self._doubt_owner
        await self.writer.run(lambda conn: inbound_doubt_sql.settle(conn, settle, owner), lazy=True)

    async def file_inbound_part(
        self,
        route: str,
        sms: InboundSms,
        now: float,
        hold_for: float,
        *,
        then: inbound_parts.InboundHook | None = None,
    ) -> inbound_parts.FiledPart:
        """Hold one part of a concatenated message, durably; store its set once whole.

        Returns after the commit. `hold_for` is the reassembly timeout: how long a
        completed set's digests keep a redelivered part from opening a new set.
        """
        c = self._crypto
        part = inbound_parts.prepare_part(c, route, sms, now)
        return await self.writer.run(
            lambda conn: inbound_parts.file_part(conn, c, part, now, hold_for, then)
        )

    async def expire_inbound_parts(
        self, now: float, hold_for: float, *, then: inbound_parts.InboundHook | None = None
    ) -> inbound_parts.ExpiredSets:
        """Store sets held `hold_for` seconds as incomplete messages (one transaction)."""
        c = self._crypto
        return await self.writer.run(
            lambda conn: inbound_parts.expire_sets(conn, c, now, hold_for, then)
        )

    async def held_inbound_parts(self) -> int:
        cur = await self.reader.execute("SELECT count(*) FROM inbound_parts")
        row = await cur.fetchone()
        return int(row[0]) if row else 0
