"""The durable marks of inbound deliveries in doubt on a cluster: the SQL, in the shared
table every node reads (`gateway/inbound_doubt.py` says why; cluster migration 29).

The owner of a mark is the incarnation that delivered it last: a mark whose owner's
lease no longer runs (killed, fenced, superseded by the node's next start) or that has
none (copied from SQLite) was left by a delivery nobody will acknowledge, so it is in
doubt, on every node; one of a live incarnation is in doubt once that incarnation
flagged it failed. A delivery's take locks the mark (`FOR UPDATE`): two nodes handed
the same redelivery at once take it one after the other, and both find its id stored."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.inbound_doubt import Settle

Conn = AsyncConnection[TupleRow]

_TAKE = (
    "SELECT d.inbound_id FROM inbound_doubt d WHERE d.digest = %s AND d.at > %s"
    " AND (d.failed OR d.owner IS NULL OR NOT EXISTS (SELECT 1 FROM nodes n"
    " WHERE n.incarnation = d.owner AND n.lease_until > clock_timestamp()))"
    " ORDER BY d.at, d.inbound_id LIMIT 1 FOR UPDATE OF d"
)


async def settle(conn: Conn, s: Settle, owner: int | None) -> None:
    """Flag failed marks, clear acknowledged ones, sweep expired ones."""
    async with conn.cursor() as cur:
        if s.failed and owner is not None:
            await cur.executemany(
                "UPDATE inbound_doubt SET failed = true WHERE digest = %s AND owner = %s",
                [(d, owner) for d in s.failed],
            )
        if s.cleared:
            await cur.executemany(
                "DELETE FROM inbound_doubt WHERE digest = %s AND inbound_id = %s", s.cleared
            )
        if s.expired is not None:
            await cur.execute("DELETE FROM inbound_doubt WHERE at <= %s", (s.expired,))


async def take(conn: Conn, digest: bytes, since: float, owner: int | None) -> str | None:
    """The id of the oldest mark of `digest` in doubt kept since `since`, made
    `owner`'s (in flight again); None if there is none."""
    rows = await _all(conn, _TAKE, digest, since)
    if not rows:
        return None
    inbound_id = str(rows[0][0])
    await conn.execute(
        "UPDATE inbound_doubt SET owner = %s, failed = false WHERE digest = %s AND inbound_id = %s",
        (owner, digest, inbound_id),
    )
    return inbound_id


async def mark(conn: Conn, digest: bytes, inbound_id: str, at: float, owner: int | None) -> None:
    await conn.execute(
        "INSERT INTO inbound_doubt (digest, inbound_id, at, owner) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (digest, inbound_id) DO UPDATE SET owner = excluded.owner,"
        " failed = false",
        (digest, inbound_id, at, owner),
    )


async def _all(conn: Conn, sql: str, *params: Any) -> list[Any]:
    return await (await conn.execute(sql.encode(), params)).fetchall()
