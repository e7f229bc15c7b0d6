"""Inbound messages on a cluster node: stored in PostgreSQL, where every node reads them.

The sink files what a driver hands it here instead of in the node's SQLite store
(`InboundStore`, the same three calls as `Store`'s), so `GET /api/v1/inbound` and the
panel show one list on every node and a dead node's inbound stays visible.

Theory of operation: SQLite's (`gateway/store/inbound_parts.py`) in PostgreSQL terms.
A whole message is one row of `inbound`, its seq the next after the highest, taken
under an advisory lock held to the commit (seqs commit in order: a poller that saw
one never misses a smaller one). A part of a
concatenated message is one row of the shared `inbound_parts`, so parts that reach
different nodes or binds join; each filing holds the set's advisory lock (two nodes
filing the last two parts at once: one of them sees the set whole). When the set is
whole it is joined, stored, its parts deleted and their digests kept in
`inbound_sets_done`, so the carrier's redelivery of a part, on any node, is a no-op.
Expiry takes each due set under the same lock and checks it is still there (another
node may have stored it first).

The keyword step (`then`) runs after the PostgreSQL commit, in one job of the node's
SQLite writer: on a cluster it classifies the text and the decision itself goes to
PostgreSQL afterwards (`consent_inbound.py`, keyed by the inbound id, so it is made
once); the node-local steps (surveys) keep their SQLite tables. A crash between the
two leaves a stored inbound whose keyword was not decided; the carrier, not answered,
redelivers: a message in one piece is then stored under the same id, its mark in doubt
left by the crash (`inbound_marks.py`), and decided; a part is recognised and dropped
(the set's keyword stays undecided; docs/ops/cluster.md).

Nothing here logs, and no exception carries a number or a text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from drivers.base import InboundSms
from gateway.cluster import inbound_marks, seal_guard
from gateway.cluster.lease import Pool
from gateway.cluster.outbox_store import inbound_row
from gateway.inbound import join_parts
from gateway.inbound_doubt import DIGEST_PURPOSE, Marked, Settle, StoredOnce
from gateway.models import new_message_id
from gateway.store import inbound_parts
from gateway.store.crypto import FieldCipher
from gateway.store.inbound_parts import (
    ExpiredSets,
    Filed,
    FiledPart,
    InboundHook,
    PreparedPart,
    StoredInbound,
    part_digest,
)
from gateway.store.store import Store

if TYPE_CHECKING:
    from gateway.cluster.nodes import Incarnation
    from gateway.cluster.shared_keys import KeyringWatch

Conn = AsyncConnection[TupleRow]
_LOCK_SPACE = 0x696E6273  # "inbs": the two-key advisory locks' space of part sets

_ORDER_LOCK = (0x696E626F, 0)  # "inbo": the lock that orders `inbound.seq`
_INSERT = (
    "INSERT INTO inbound (id, seq, route, sender_ct, sender_index, recipient_ct, body_ct,"
    " carrier_id, received_at, incomplete, node_id) VALUES (%s,"
    " (SELECT coalesce(max(seq), 0) + 1 FROM inbound), %s,%s,%s,%s,%s,%s,%s,%s,%s)"
)


_DUE_SETS = (  # sets whose first part is `timeout` old, the oldest first
    "SELECT set_key FROM inbound_parts GROUP BY set_key"
    " HAVING min(received_at) + %s <= %s ORDER BY min(received_at)"
)
_DUE_SET = (  # the part count of one set if it is due
    "SELECT max(total) FROM inbound_parts WHERE set_key = %s HAVING min(received_at) + %s <= %s"
)


class ClusterInbound:
    """`InboundStore` on the shared PostgreSQL tables, under the shared keyring."""

    def __init__(
        self,
        pool: Pool,
        cipher: FieldCipher,
        store: Store,
        node_id: str,
        keys: KeyringWatch | None = None,
        me: Callable[[], Incarnation] | None = None,
    ) -> None:
        self._pool = pool
        self._cipher = cipher
        self._store = store  # its writer runs the keyword step
        self._node_id = node_id
        self._keys = keys  # a write the seal guard refused runs again under the key taken up
        self._me = me  # the owner of this node's marks in doubt (none: every mark is)

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
        then: InboundHook | None = None,
        again: bool = False,
    ) -> bool:
        """With `again`, an id already stored stores nothing (False), but `then` runs:
        the attempt that stored it may have failed before its keyword step, whose
        decisions are keyed by the inbound id (made once)."""
        stored = StoredInbound(inbound_id, route, sender, body, recipient, now)

        async def write() -> bool:
            async with self._pool.connection() as conn, conn.transaction():
                if again and await _all(conn, "SELECT 1 FROM inbound WHERE id = %s", inbound_id):
                    return False
                await self._insert(conn, stored, carrier_id, incomplete=incomplete)
                return True

        new = await seal_guard.retried(self._keys, write)
        await self._then(then, [stored])
        return new

    def inbound_digest(self, scope: str, sender: str, recipient: str | None, body: str) -> bytes:
        return self._cipher.keyed_digest(DIGEST_PURPOSE, scope, sender, recipient or "", body)

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
        then: InboundHook | None = None,
    ) -> StoredOnce:
        """As `Store.insert_inbound_once`, on the shared tables; `then` runs also for an
        id stored before (its attempt may have failed before its keyword step, whose
        decisions are keyed by the inbound id: made once)."""
        owner = self._owner()

        async def write() -> StoredOnce:
            async with self._pool.connection() as conn, conn.transaction():
                await inbound_marks.settle(conn, marked.settle, owner)
                earlier = await inbound_marks.take(conn, marked.digest, now - marked.keep, owner)
                if earlier is not None and await _all(
                    conn, "SELECT 1 FROM inbound WHERE id = %s", earlier
                ):
                    return StoredOnce(earlier, False)
                iid = inbound_id if earlier is None else earlier
                stored = StoredInbound(iid, route, sender, body, recipient, now)
                await self._insert(conn, stored, carrier_id, incomplete=False)
                await inbound_marks.mark(conn, marked.digest, iid, now, owner)
                return StoredOnce(iid, True)

        once = await seal_guard.retried(self._keys, write)
        stored = StoredInbound(once.inbound_id, route, sender, body, recipient, now)
        await self._then(then, [stored])
        return once

    async def settle_inbound_doubt(self, settle: Settle) -> None:
        owner = self._owner()
        async with self._pool.connection() as conn, conn.transaction():
            await inbound_marks.settle(conn, settle, owner)

    def _owner(self) -> int | None:
        return None if self._me is None else self._me().incarnation

    async def file_inbound_part(
        self,
        route: str,
        sms: InboundSms,
        now: float,
        hold_for: float,
        *,
        then: InboundHook | None = None,
    ) -> FiledPart:

        async def write() -> tuple[FiledPart, StoredInbound | None]:
            part = inbound_parts.prepare_part(self._cipher, route, sms, now)  # sealed here
            async with self._pool.connection() as conn, conn.transaction():
                await _lock_set(conn, part.set_key)
                return await self._file(conn, part, now, hold_for)

        filed, stored = await seal_guard.retried(self._keys, write)
        await self._then(then, [] if stored is None else [stored])
        return filed

    async def expire_inbound_parts(
        self, now: float, hold_for: float, *, then: InboundHook | None = None
    ) -> ExpiredSets:
        stored: list[StoredInbound] = []
        async with self._pool.connection() as conn:
            # Each step its own transaction (not savepoints of one opened by a bare
            # read): a set's lock is held only while that set is stored.
            async with conn.transaction():
                due = await _all(conn, _DUE_SETS, hold_for, now)
            for (key,) in due:
                async with conn.transaction():
                    await _lock_set(conn, bytes(key))
                    # Still due under the lock: another node may have stored it, and a
                    # new message may have opened a set under the same key since.
                    again = await _all(conn, _DUE_SET, key, hold_for, now)
                    if again:
                        stored.append(
                            await self._store_set(
                                conn, bytes(key), again[0][0], now, incomplete=True
                            )
                        )
            async with conn.transaction():
                await conn.execute(
                    "DELETE FROM inbound_sets_done WHERE done_at <= %s", (now - hold_for,)
                )
                ((oldest,),) = await _all(conn, "SELECT min(received_at) FROM inbound_parts")
        await self._then(then, stored)
        return ExpiredSets(
            tuple(s.id for s in stored), None if oldest is None else oldest + hold_for
        )

    async def held_inbound_parts(self) -> int:
        async with self._pool.connection() as conn:
            ((count,),) = await _all(conn, "SELECT count(*) FROM inbound_parts")
        return int(count)

    # -- in the transaction --------------------------------------------------------------

    async def _insert(
        self, conn: Conn, s: StoredInbound, carrier_id: str | None, *, incomplete: bool
    ) -> None:
        c, iid = self._cipher, s.id
        # Taken last in every transaction (after a set's lock): no deadlock.
        await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", _ORDER_LOCK)
        await conn.execute(
            _INSERT.encode(),
            (
                iid,
                s.route,
                c.encrypt(s.sender, iid, "sender"),
                c.blind_index(s.sender),
                None if s.recipient is None else c.encrypt(s.recipient, iid, "recipient"),
                c.encrypt(s.body, iid, "body"),
                carrier_id,
                s.received_at,
                incomplete,
                self._node_id,
            ),
        )
        await inbound_row(conn, iid, s.route, s.received_at)

    async def _file(
        self, conn: Conn, part: PreparedPart, now: float, hold_for: float
    ) -> tuple[FiledPart, StoredInbound | None]:
        done = await _all(
            conn,
            "SELECT digest, done_at FROM inbound_sets_done WHERE set_key = %s AND seq = %s",
            part.set_key,
            part.seq,
        )
        if done:
            digest, done_at = done[0]
            if bytes(digest) == part.digest and done_at + hold_for > now:
                return FiledPart(Filed.DUPLICATE), None
            # Other text under the same reference: a new message reusing it.
            await conn.execute("DELETE FROM inbound_sets_done WHERE set_key = %s", (part.set_key,))
        inserted = await conn.execute(
            "INSERT INTO inbound_parts (id, route, set_key, seq, total, sender_ct,"
            " recipient_ct, body_ct, carrier_id, received_at, node_id)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (set_key, seq) DO NOTHING",
            (
                part.id,
                part.route,
                part.set_key,
                part.seq,
                part.total,
                part.sender_ct,
                part.recipient_ct,
                part.body_ct,
                part.carrier_id,
                part.received_at,
                self._node_id,
            ),
        )
        if not inserted.rowcount:
            return FiledPart(Filed.DUPLICATE), None
        ((held,),) = await _all(
            conn, "SELECT count(*) FROM inbound_parts WHERE set_key = %s", part.set_key
        )
        if held < part.total:
            return FiledPart(Filed.HELD), None
        stored = await self._store_set(conn, part.set_key, part.total, now, incomplete=False)
        return FiledPart(Filed.COMPLETED, stored.id), stored

    async def _store_set(
        self, conn: Conn, key: bytes, total: int, now: float, *, incomplete: bool
    ) -> StoredInbound:
        c = self._cipher
        rows = await _all(
            conn,
            "SELECT id, route, seq, sender_ct, recipient_ct, body_ct, carrier_id, received_at"
            " FROM inbound_parts WHERE set_key = %s ORDER BY seq",
            key,
        )
        part_id, route, _, sender_ct, recipient_ct, _, carrier_id, _ = rows[0]
        texts = {int(r[2]): c.decrypt(bytes(r[5]), r[0], "body") for r in rows}
        stored = StoredInbound(
            new_message_id(),
            route,
            c.decrypt(bytes(sender_ct), part_id, "sender"),
            join_parts(texts, total),
            None if recipient_ct is None else c.decrypt(bytes(recipient_ct), part_id, "recipient"),
            max(float(r[7]) for r in rows),
        )
        await self._insert(conn, stored, carrier_id, incomplete=incomplete)
        await conn.execute("DELETE FROM inbound_parts WHERE set_key = %s", (key,))
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO inbound_sets_done (set_key, seq, digest, done_at)"
                " VALUES (%s,%s,%s,%s) ON CONFLICT (set_key, seq)"
                " DO UPDATE SET digest = excluded.digest, done_at = excluded.done_at",
                [(key, seq, part_digest(c, key, seq, text), now) for seq, text in texts.items()],
            )
        return stored

    async def _then(self, then: InboundHook | None, stored: Sequence[StoredInbound]) -> None:
        if then is None or not stored:
            return

        def job(conn: Any) -> None:
            for s in stored:
                then(conn, s)

        await self._store.writer.run(job)


async def _lock_set(conn: Conn, key: bytes) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock(%s, %s)",
        (_LOCK_SPACE, int.from_bytes(key[:4], "big", signed=True)),
    )


async def _all(conn: Conn, sql: str, *params: Any) -> list[Any]:
    return await (await conn.execute(sql.encode(), params)).fetchall()
