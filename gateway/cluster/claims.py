"""Claiming a group of due messages from the shared queue, in one transaction.

Theory of operation. A node claims from one *route group* (the set of routes a message
may leave by) through a route it holds. If the route sends on a carrier account, it
first takes the tokens it may use from that account's bucket, in a short transaction
of its own (`buckets.take`: the row's lock is not held through the claim). Then, in one
transaction, it (1) holds its own incarnation's row, refusing to claim once its lease
has ended in database time (`nodes.lock_live`: the server-side half of fencing); (2)
claims at most as many queued, due rows as it has tokens in class, due-time and id
order with `FOR UPDATE SKIP LOCKED` through the one partial index `messages_claim`,
making them `sending` with its node id, incarnation and a new claim epoch, and writes
their events. The commit makes them `sending` durably before the caller hands a byte to
a driver, as in the SQLite store. (3) The tokens it did not use go back
(`buckets.settle`).

Concurrent claimers never take the same row: a row another transaction has locked is
skipped, and one it has already claimed no longer matches `state = 'queued'` when it
is re-checked under the lock (PostgreSQL's READ COMMITTED re-evaluates the WHERE clause
on the newest row version). The CTE keeps LIMIT apart from the UPDATE, as Oban does,
so the planner cannot update more rows than were selected.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster import buckets
from gateway.cluster.claim_floor import ClaimFloors
from gateway.cluster.nodes import Incarnation, lock_live
from gateway.models import Priority, State

_CLAIMED = f"""
claimed AS (
    UPDATE messages m SET state = '{State.SENDING.value}', route = %(route)s,
        owner_node = %(node)s, owner_incarnation = %(inc)s, claim_epoch = m.claim_epoch + 1,
        attempts = m.attempts + 1, updated_at = %(now)s,
        claimed_at = coalesce(%(stamp)s::timestamptz, clock_timestamp())
    FROM c WHERE m.id = c.id
    RETURNING m.id, m.claim_epoch, m.priority, m.due_at, m.attempts, m.possible_duplicate,
        m.to_ct, m.body_ct, m.encoding
), logged AS (
    INSERT INTO message_events (message_id, at, state, route, attempt, node_id, incarnation)
    SELECT id, %(now)s, '{State.SENDING.value}', %(route)s, attempts, %(node)s, %(inc)s
    FROM claimed
)
SELECT * FROM claimed
"""  # noqa: S608 - fixed state names

_DUE = f"state = '{State.QUEUED.value}' AND route_group = %(group)s AND due_at <= %(now)s"

CLAIM_SQL = f"""
WITH c AS (
    SELECT id FROM messages
    WHERE {_DUE}
    ORDER BY priority, due_at, id
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
), {_CLAIMED}"""  # noqa: S608 - fixed state names

# The planner, counting few live queued rows, would rather read every `queued` entry of
# `messages_list_state` and sort them than a range of `messages_claim`; with a held
# horizon those entries are every row claimed since (S9): the very walk the floor saves.
# Without sorts, only `messages_claim`'s order serves the floored statements (for the
# rest of the claim's transaction: its other statements sort nothing).
SORT_OFF = "SET LOCAL enable_sort = off"

# One class from its floor on (`claim_floor.py`): an ordered range of `messages_claim`.
CLAIM_FROM_FLOOR_SQL = f"""
WITH c AS (
    SELECT id FROM messages
    WHERE {_DUE} AND priority = %(prio)s AND due_at >= %(floor)s
    ORDER BY due_at, id
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
), {_CLAIMED}"""  # noqa: S608 - fixed state names


# Due rows left in the group, up to n (the demand a claim the buckets cut short reports).
DUE_COUNT_SQL = f"""
SELECT count(*) FROM (SELECT 1 FROM messages WHERE {_DUE} LIMIT %(n)s) d
"""  # noqa: S608 - fixed state names

DUE_COUNT_FROM_FLOOR_SQL = f"""
SELECT count(*) FROM (
    SELECT 1 FROM messages WHERE {_DUE} AND priority = %(prio)s AND due_at >= %(floor)s
    ORDER BY due_at, id LIMIT %(n)s
) d
"""  # noqa: S608 - fixed state names


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message now `sending` for this incarnation; `epoch` goes back with its outcome.
    The number and body are still ciphertext (the store decrypts, bound to the id)."""

    id: str
    epoch: int
    priority: Priority
    due_at: float
    attempts: int
    possible_duplicate: bool
    to_ct: bytes
    body_ct: bytes
    encoding: str


@dataclass(frozen=True, slots=True)
class ClaimResult:
    claimed: list[Claimed]
    # Seconds until the account's buckets hold a token again; 0 if they do (or no account).
    retry_after: float = 0.0


async def claim(
    conn: AsyncConnection[TupleRow],
    me: Incarnation,
    group: str,
    route: str,
    want: int,
    now: float,
    *,
    account: str | None = None,
    demand: float | None = None,
    floors: ClaimFloors | None = None,
) -> ClaimResult:
    """Claim up to `want` due messages of `group` for `route`, in priority order.

    `now` is the gateway's clock (due times are), the rate buckets run on the
    database's; `demand` (tokens a second) is what this node reports it wants of the
    account (default: measured, `buckets.settle`); with `floors`, each class is read from
    its floor on, and the floors move once the claim committed. Raises `LeaseLost` if
    this incarnation may no longer claim."""
    if want < 1:
        raise ValueError("want must be at least 1")
    taken: dict[Priority, list[float]] = {}
    grant = None if account is None else await buckets.take(conn, account, me, want)
    n = want if grant is None else grant.n
    rows: list[TupleRow] = []
    asked = 0
    try:
        async with conn.transaction():
            await lock_live(conn, me)
            if n > 0:
                params = {
                    "group": group,
                    "now": now,
                    "n": n,
                    "route": route,
                    "node": me.node_id,
                    "inc": me.incarnation,
                    "stamp": None if grant is None else grant.stamp,
                }
                if floors is None:
                    rows = await (await conn.execute(CLAIM_SQL, params)).fetchall()
                else:
                    await conn.execute(SORT_OFF)
                    rows, taken = await _from_floors(conn, params, floors)
            asked = len(rows)  # what was due: all it took, unless the buckets stopped it
            if grant is not None and len(rows) == grant.n < want:
                more = {"group": group, "now": now, "n": want - len(rows)}
                asked += await _due_count(conn, more, floors)
    except Exception:
        if grant is not None and account is not None:  # nothing claimed: all of them back
            with contextlib.suppress(Exception):
                await buckets.settle(conn, account, me, grant, 0, want, demand)
        raise
    retry_after = 0.0
    if grant is not None and account is not None:
        retry_after = await buckets.settle(conn, account, me, grant, len(rows), asked, demand)
    if floors is not None and n > 0:  # a class the claim did not reach keeps its floor
        for prio, due in taken.items():
            floors.after_claim(group, prio, due, now)
    claimed = sorted(
        (
            Claimed(r[0], r[1], Priority(r[2]), r[3], r[4], r[5], bytes(r[6]), bytes(r[7]), r[8])
            for r in rows
        ),
        key=lambda c: (c.priority, c.due_at, c.id),
    )
    return ClaimResult(claimed, retry_after)


async def _from_floors(
    conn: AsyncConnection[TupleRow], params: dict[str, Any], floors: ClaimFloors
) -> tuple[list[TupleRow], dict[Priority, list[float]]]:
    """`CLAIM_SQL`'s rows, one class after the other from its floor, until `n`: the rows
    and the due times taken of each class read."""
    rows: list[TupleRow] = []
    taken: dict[Priority, list[float]] = {}
    for prio in Priority:
        left = params["n"] - len(rows)
        if left <= 0:
            break
        bound = floors.bound(params["group"], prio)
        got = await (
            await conn.execute(
                CLAIM_FROM_FLOOR_SQL, {**params, "prio": int(prio), "floor": bound, "n": left}
            )
        ).fetchall()
        rows += got
        taken[prio] = [float(r[3]) for r in got]
    return rows, taken


async def _due_count(
    conn: AsyncConnection[TupleRow], params: dict[str, Any], floors: ClaimFloors | None
) -> int:
    if floors is None:
        return int((await (await conn.execute(DUE_COUNT_SQL, params)).fetchone() or (0,))[0])
    count = 0
    for prio in Priority:
        if count >= params["n"]:
            break
        more = {**params, "prio": int(prio), "floor": floors.bound(params["group"], prio),
                "n": params["n"] - count}  # fmt: skip
        count += int(
            (await (await conn.execute(DUE_COUNT_FROM_FLOOR_SQL, more)).fetchone() or (0,))[0]
        )
    return count
