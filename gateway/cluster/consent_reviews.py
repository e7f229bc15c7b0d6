"""The review queue (MSG-4) on the cluster's PostgreSQL: one queue for every node.

A node that receives a free-text revocation or a look-alike opens the review in the
transaction that decides the text (`open_review`, from `consent_inbound.py`); any node
lists and resolves it (`ClusterReviews`, the `ReviewQueue` of
`gateway/consent/review_store.py`). The inbound message stays in the receiving node's
SQLite store, so the review keeps its text, encrypted under the shared keyring bound to
the review's id, for a reviewer on another node. Resolving holds the contact's advisory
lock, as every decision about a contact does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster import consent_store
from gateway.cluster.lease import Pool
from gateway.consent.ledger import contact_row_id
from gateway.consent.review_store import CORRECTED, lifting
from gateway.models import new_message_id
from gateway.store.consent_sql import Review
from gateway.store.crypto import FieldCipher
from gateway.store.inbound_parts import StoredInbound

Conn = AsyncConnection[TupleRow]
_COLUMNS = (
    "id, inbound_id, contact_idx, program, reason, created_at, resolved_at, resolution, actor"
)

_RESOLVE = (
    "UPDATE consent_reviews SET resolved_at = %s, resolution = %s, actor = %s"  # noqa: S608 - a constant
    " WHERE id = %s AND resolved_at IS NULL RETURNING " + _COLUMNS
).encode()


async def open_review(
    conn: Conn,
    cipher: FieldCipher,
    s: StoredInbound,
    idx: bytes,
    program: str,
    why: str,
    node_id: str,
) -> bool:
    """A review of `s` ("phrase": a revocation, "ambiguous": a look-alike), in the
    caller's transaction; False if the message has one already (handed over again)."""
    review_id = "rev_" + new_message_id()
    cur = await conn.execute(
        "INSERT INTO consent_reviews (id, inbound_id, contact_idx, program, reason,"
        " created_at, body_ct, node_id) VALUES (%s,%s,%s,%s,%s,%s,%s,%s)"
        " ON CONFLICT (inbound_id) DO NOTHING",
        (
            review_id,
            s.id,
            idx,
            program,
            why,
            s.received_at,
            cipher.encrypt(s.body, review_id, "body"),
            node_id,
        ),
    )
    return cur.rowcount == 1


class ClusterReviews:
    """`ReviewQueue` on the shared PostgreSQL."""

    def __init__(self, pool: Pool, cipher: FieldCipher, node_id: str) -> None:
        self._pool = pool
        self._cipher = cipher
        self._node_id = node_id

    async def open(self, limit: int) -> list[Review]:
        rows = await self._all(
            f"SELECT {_COLUMNS} FROM consent_reviews WHERE resolved_at IS NULL"  # noqa: S608 - a constant
            " ORDER BY created_at, id LIMIT %s",
            (limit,),
        )
        return [_review(r) for r in rows]

    async def numbers(self, idxs: Sequence[bytes]) -> dict[bytes, str]:
        if not idxs:
            return {}
        rows = await self._all(
            "SELECT idx, number_ct FROM contacts WHERE idx = ANY(%s)", (list(idxs),)
        )
        c = self._cipher
        return {
            bytes(r[0]): c.decrypt(bytes(r[1]), contact_row_id(bytes(r[0])), "number") for r in rows
        }

    async def texts(self, inbound_ids: Sequence[str]) -> dict[str, str]:
        if not inbound_ids:
            return {}
        rows = await self._all(
            "SELECT inbound_id, id, body_ct FROM consent_reviews"
            " WHERE inbound_id = ANY(%s) AND body_ct IS NOT NULL",
            (list(inbound_ids),),
        )
        return {r[0]: self._cipher.decrypt(bytes(r[2]), r[1], "body") for r in rows}

    async def resolve(
        self, review_id: str, resolution: str, actor: str, now: float
    ) -> tuple[str, ...] | None:
        async with self._pool.connection() as conn, conn.transaction():
            found = await (
                await conn.execute(
                    "SELECT contact_idx FROM consent_reviews WHERE id = %s", (review_id,)
                )
            ).fetchone()
            if found is None:
                return None
            idx = bytes(found[0])
            await consent_store.lock_contacts(conn, [idx])
            row = await (
                await conn.execute(_RESOLVE, (now, resolution, actor, review_id))
            ).fetchone()
            if row is None:
                return None
            review = _review(row)
            if resolution != CORRECTED:
                return ()
            number = await self._number(conn, idx)
            if number is None:
                return ()
            caused = await (
                await conn.execute(
                    "SELECT scope, program FROM consent_ledger WHERE inbound_id = %s"
                    " AND decision = 'opt_out' ORDER BY seq",
                    (review.inbound_id,),
                )
            ).fetchall()
            done = []
            for scope, program in caused:
                entry = lifting(review, number, scope, program, actor, now)
                entry_id, _ = await consent_store.append(conn, self._cipher, entry, self._node_id)
                done.append(entry_id)
            return tuple(done)

    async def _number(self, conn: Conn, idx: bytes) -> str | None:
        r = await (
            await conn.execute("SELECT number_ct FROM contacts WHERE idx = %s", (idx,))
        ).fetchone()
        if r is None:
            return None
        return self._cipher.decrypt(bytes(r[0]), contact_row_id(idx), "number")

    async def _all(self, sql: str, params: Sequence[Any]) -> list[Any]:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql.encode(), params)).fetchall()


def _review(r: Sequence[Any]) -> Review:
    return Review(r[0], r[1], bytes(r[2]), r[3], r[4], r[5], r[6], r[7], r[8])
