"""Nodes, their leases and the recovery of a dead node's claims: the SQL.

A node has a configured, stable `node_id`; each start registers a new *incarnation*
(a number from the `nodes` sequence) with a lease on the database's clock
(`clock_timestamp() + lease`). Registering supersedes every earlier incarnation of the
same node id: its lease ends now, so its `sending` rows are recovered at once, and a
process still running under it is refused its next renewal and fences itself.

A renewal succeeds only while the lease still runs (in database time) and nobody has
recovered the incarnation: a lease that lapsed is never revived, since its rows may
already be someone else's. Recovery is a sweep any node runs: incarnations whose lease
lapsed are locked `FOR UPDATE SKIP LOCKED` (two sweepers never take the same one), their
`sending` rows go back to `queued` flagged `possible_duplicate` with the claim epoch
moved on (so the old owner's finish is refused, `outcomes.py`), and the incarnation is
marked recovered, all in one transaction. A claim holds its incarnation's row
`FOR KEY SHARE` (`claims.py`), which a sweeper's `FOR UPDATE` skips: a claim and the
recovery of its own incarnation never interleave. (A recovery's `updated_at` and event
time come from the database's clock: the sweeping node's clock is no better.)
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.models import State

RECOVERED_CODE = "cluster:lease_expired"


@dataclass(frozen=True, slots=True)
class Incarnation:
    """One start of one node: who owns what it claims."""

    node_id: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class Recovered:
    """One dead incarnation taken back by a sweep: how many of its rows were requeued."""

    incarnation: int
    node_id: str
    requeued: int


class LeaseLost(Exception):
    """The incarnation's lease ended (lapsed, superseded or recovered): it may not act."""


async def register(
    conn: AsyncConnection[TupleRow], node_id: str, lease_seconds: float
) -> Incarnation:
    """A new incarnation of `node_id` with a fresh lease; earlier ones end now."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE nodes SET lease_until = least(lease_until, clock_timestamp())"
            " WHERE node_id = %s AND recovered_at IS NULL",
            (node_id,),
        )
        cur = await conn.execute(
            "INSERT INTO nodes (node_id, lease_until)"
            " VALUES (%s, clock_timestamp() + make_interval(secs => %s)) RETURNING incarnation",
            (node_id, lease_seconds),
        )
        row = await cur.fetchone()
    assert row is not None
    return Incarnation(node_id, int(row[0]))


async def renew(conn: AsyncConnection[TupleRow], me: Incarnation, lease_seconds: float) -> bool:
    """Extend the lease from now; False if it had already ended (never revived)."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE nodes SET lease_until = clock_timestamp() + make_interval(secs => %s),"
            " renewed_at = clock_timestamp()"
            " WHERE incarnation = %s AND recovered_at IS NULL"
            " AND lease_until > clock_timestamp() RETURNING 1",
            (lease_seconds, me.incarnation),
        )
        return await cur.fetchone() is not None


async def lock_live(conn: AsyncConnection[TupleRow], me: Incarnation) -> None:
    """In the caller's transaction: hold our incarnation's row (KEY SHARE) if its lease
    runs, so no sweep recovers it before this transaction ends; else `LeaseLost`."""
    cur = await conn.execute(
        "SELECT 1 FROM nodes WHERE incarnation = %s AND node_id = %s"
        " AND recovered_at IS NULL AND lease_until > clock_timestamp() FOR KEY SHARE",
        (me.incarnation, me.node_id),
    )
    if await cur.fetchone() is None:
        raise LeaseLost(me.node_id)


_REQUEUE = f"""
WITH back AS (
    UPDATE messages SET state = '{State.QUEUED.value}', possible_duplicate = true,
        claim_epoch = claim_epoch + 1, owner_node = NULL, owner_incarnation = NULL,
        held_by = NULL,
        error_code = '{RECOVERED_CODE}', updated_at = extract(epoch FROM clock_timestamp())
    WHERE state = '{State.SENDING.value}' AND owner_incarnation = %(inc)s
    RETURNING id, attempts, updated_at
), logged AS (
    INSERT INTO message_events (message_id, at, state, error_code, attempt, node_id, incarnation)
    SELECT id, updated_at, '{State.QUEUED.value}', '{RECOVERED_CODE}', attempts,
        %(by_node)s, %(by_inc)s FROM back
)
SELECT count(*) FROM back
"""  # noqa: S608 - fixed state names


async def recover_expired(conn: AsyncConnection[TupleRow], by: Incarnation) -> list[Recovered]:
    """Take back every lapsed incarnation nobody else is taking back now."""
    recovered = []
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT incarnation, node_id FROM nodes WHERE recovered_at IS NULL"
            " AND lease_until <= clock_timestamp() ORDER BY incarnation"
            " FOR UPDATE SKIP LOCKED"
        )
        for incarnation, node_id in await cur.fetchall():
            params = {"inc": incarnation, "by_node": by.node_id, "by_inc": by.incarnation}
            count = await (await conn.execute(_REQUEUE, params)).fetchone()
            requeued = int(count[0]) if count else 0
            await conn.execute(
                "UPDATE nodes SET recovered_at = clock_timestamp(), recovered_by = %s,"
                " recovered_rows = %s WHERE incarnation = %s",
                (by.incarnation, requeued, incarnation),
            )
            # Its rate shares go too: a dead node no longer counts in anyone's share.
            await conn.execute("DELETE FROM rate_shares WHERE incarnation = %s", (incarnation,))
            recovered.append(Recovered(int(incarnation), str(node_id), requeued))
    return recovered


PRUNE_LOCK = 0x736D7367_77000002  # pg_try_advisory_xact_lock key: "smsgw" + 2

# Incarnations gone long ago: recovered (their `sending` rows taken back) and their
# lease over for `after` seconds, not the newest of their node id (the cluster view
# shows each node's last one), and referenced by no live row: no `sending` message, no
# bind slot, no rate share. History (events, late outcomes, `sent` rows' owner) keeps
# node id and incarnation as plain values and needs no `nodes` row. Their published
# routes go with them.
_PRUNE = f"""
WITH gone AS (
    DELETE FROM nodes n
    WHERE n.recovered_at < clock_timestamp() - make_interval(secs => %(after)s)
        AND n.lease_until < clock_timestamp() - make_interval(secs => %(after)s)
        AND n.incarnation < (SELECT max(l.incarnation) FROM nodes l WHERE l.node_id = n.node_id)
        AND NOT EXISTS (SELECT 1 FROM messages m
            WHERE m.owner_incarnation = n.incarnation AND m.state = '{State.SENDING.value}')
        AND NOT EXISTS (SELECT 1 FROM route_slots s WHERE s.incarnation = n.incarnation)
        AND NOT EXISTS (SELECT 1 FROM rate_shares r WHERE r.incarnation = n.incarnation)
    RETURNING n.incarnation
), routes AS (
    DELETE FROM node_routes r USING gone WHERE r.incarnation = gone.incarnation
)
SELECT count(*) FROM gone
"""  # noqa: S608 - fixed state names


async def prune_gone(conn: AsyncConnection[TupleRow], after: float) -> int | None:
    """Delete the `nodes` and `node_routes` rows of incarnations gone for `after`
    seconds; how many, or None if another node is pruning now (one at a time)."""
    async with conn.transaction():
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PRUNE_LOCK,))
        got = await cur.fetchone()
        if got is None or not got[0]:
            return None
        row = await (await conn.execute(_PRUNE, {"after": after})).fetchone()
    return 0 if row is None else int(row[0])
