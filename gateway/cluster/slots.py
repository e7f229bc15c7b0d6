"""Bind slots: a carrier's cap on SMPP sessions per account, held across the nodes.

A node takes a slot (`acquire`) before it binds a route and gives it back (`release`)
after it unbinds. A slot is free when nobody holds it, or when its holder's lease ended
at least the slot's `grace` seconds ago: a node that died may still have a session open
at the carrier until the carrier's own enquire_link or inactivity timer drops it, and
binding again before that would be refused (`ESME_RALYBND`). Nothing renews a slot: it
lives as long as its holder's lease (plus the grace), so heartbeats stay one row.
Concurrent acquirers lock candidate slots `FOR UPDATE SKIP LOCKED`: two never get the
same one. A fenced node unbinds on its own (`bindslots.py`): its slot frees when it
gives it back, or else `grace` after its lease.
"""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster.nodes import Incarnation, lock_live

_TAKE = """
WITH free AS (
    SELECT s.route, s.slot FROM route_slots s LEFT JOIN nodes n ON n.incarnation = s.incarnation
    WHERE s.route = %(route)s AND s.slot < %(cap)s AND (s.incarnation IS NULL
        OR n.lease_until + make_interval(secs => s.grace) <= clock_timestamp())
    ORDER BY s.slot LIMIT 1
    FOR UPDATE OF s SKIP LOCKED
)
UPDATE route_slots s SET incarnation = %(inc)s, node_id = %(node)s, grace = %(grace)s,
    taken_at = clock_timestamp()
FROM free WHERE s.route = free.route AND s.slot = free.slot
RETURNING s.slot
"""


async def acquire(
    conn: AsyncConnection[TupleRow], me: Incarnation, route: str, max_binds: int, grace: float
) -> int | None:
    """A bind slot of `route` for one session of ours, or None if all are taken."""
    if max_binds < 1 or grace < 0:
        raise ValueError("max_binds must be at least 1 and grace not negative")
    async with conn.transaction():
        await lock_live(conn, me)
        await conn.execute(
            "INSERT INTO route_slots (route, slot) SELECT %s, g FROM generate_series(0, %s) g"
            " ON CONFLICT DO NOTHING",
            (route, max_binds - 1),
        )
        params = {
            "route": route, "cap": max_binds, "inc": me.incarnation, "node": me.node_id,
            "grace": grace,
        }  # fmt: skip
        row = await (await conn.execute(_TAKE, params)).fetchone()
    return None if row is None else int(row[0])


async def release(conn: AsyncConnection[TupleRow], me: Incarnation, route: str, slot: int) -> None:
    """Our session on `slot` is unbound: the slot is free at once."""
    await conn.execute(
        "UPDATE route_slots SET incarnation = NULL, node_id = NULL, taken_at = NULL"
        " WHERE route = %s AND slot = %s AND incarnation = %s",
        (route, slot, me.incarnation),
    )
