"""Recording what became of claimed messages, guarded by their claim.

Each outcome carries the claim epoch its message was claimed with. One statement
applies every outcome whose row is still `sending` for this node, this incarnation and
that epoch (with its event and, for `sent`, its carrier ids); every other one (its
claim was lost: the row was recovered after the lease lapsed, and perhaps claimed again
by another node) is written to `late_outcomes` instead, with its carrier ids so that a
receipt can still be matched, and overwrites nothing. A finish needs no live lease: a
node fenced with submits in flight still records what the carrier answered, and its
rows that were already taken back turn into late outcomes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster.by_key import state_is
from gateway.cluster.nodes import Incarnation
from gateway.lifecycle import check_transition
from gateway.models import State
from gateway.store.group_sql import SentItem
from gateway.store.transitions import Transition


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the carrier (or the driver) made of one claimed message."""

    message_id: str
    epoch: int  # `Claimed.epoch`
    state: State  # SENT, QUEUED (a retry), FAILED or EXPIRED
    route: str
    carrier_ids: tuple[str, ...] = ()  # SENT: one per part
    error_code: str | None = None
    due_at: float | None = None  # QUEUED: when to try again
    attempts: int | None = None  # QUEUED: the count to keep (an attempt given back)
    possible_duplicate: bool = False  # QUEUED: it may have reached the carrier


@dataclass(frozen=True, slots=True)
class Finished:
    applied: list[str]
    late: list[str]  # claims that were lost: recorded in `late_outcomes` only


FINISH_SQL = f"""
WITH o AS (
    SELECT * FROM unnest(%(ids)s::text[], %(epochs)s::bigint[], %(states)s::text[],
        %(routes)s::text[], %(codes)s::text[], %(dues)s::float8[], %(attempts)s::int[],
        %(dups)s::bool[]) AS o(id, epoch, state, route, code, due, attempts, dup)
), p AS (
    SELECT * FROM unnest(%(part_ids)s::text[], %(part_cids)s::text[], %(part_nos)s::int[])
        AS p(id, cid, part)
), done AS (
    UPDATE messages m SET state = o.state, updated_at = %(now)s,
        error_code = coalesce(o.code, m.error_code), due_at = coalesce(o.due, m.due_at),
        attempts = coalesce(o.attempts, m.attempts),
        possible_duplicate = m.possible_duplicate OR o.dup,
        owner_node = CASE WHEN o.state = '{State.QUEUED.value}' THEN NULL ELSE m.owner_node END,
        owner_incarnation = CASE WHEN o.state = '{State.QUEUED.value}' THEN NULL
            ELSE m.owner_incarnation END
    FROM o
    WHERE m.id = o.id AND {state_is(State.SENDING, "m")} AND m.owner_node = %(node)s
        AND m.owner_incarnation = %(inc)s AND m.claim_epoch = o.epoch
    RETURNING m.id, m.attempts
), logged AS (
    INSERT INTO message_events (message_id, at, state, route, carrier_id, error_code,
        attempt, node_id, incarnation)
    SELECT o.id, %(now)s, o.state, o.route,
        (SELECT string_agg(p.cid, ',' ORDER BY p.part) FROM p WHERE p.id = o.id),
        o.code, done.attempts, %(node)s, %(inc)s
    FROM done JOIN o USING (id)
), parts AS (
    INSERT INTO carrier_ids (route, carrier_id, message_id, part)
    SELECT o.route, p.cid, p.id, p.part FROM p JOIN o USING (id) JOIN done USING (id)
    ON CONFLICT (route, carrier_id) DO UPDATE SET message_id = excluded.message_id,
        part = excluded.part, state = 'sent', error_code = NULL
), late AS (
    INSERT INTO late_outcomes (message_id, node_id, incarnation, claim_epoch, state, route,
        carrier_ids, error_code)
    SELECT o.id, %(node)s, %(inc)s, o.epoch, o.state, o.route,
        ARRAY(SELECT p.cid FROM p WHERE p.id = o.id ORDER BY p.part), o.code
    FROM o WHERE o.id NOT IN (SELECT id FROM done)
    RETURNING message_id
)
SELECT id, true FROM done UNION ALL SELECT message_id, false FROM late
"""  # noqa: S608 - fixed state names


async def finish(
    conn: AsyncConnection[TupleRow],
    me: Incarnation,
    outcomes: Sequence[Outcome],
    now: float,
) -> Finished:
    """Apply the outcomes whose claim still holds; record the others as late."""
    ids = [o.message_id for o in outcomes]
    if len(set(ids)) != len(ids):
        raise ValueError("one outcome per message")
    for o in outcomes:
        check_transition(State.SENDING, o.state)
    parts = [(o.message_id, cid, n) for o in outcomes for n, cid in enumerate(o.carrier_ids)]
    params = {
        "ids": ids,
        "epochs": [o.epoch for o in outcomes],
        "states": [o.state.value for o in outcomes],
        "routes": [o.route for o in outcomes],
        "codes": [o.error_code for o in outcomes],
        "dues": [o.due_at for o in outcomes],
        "attempts": [o.attempts for o in outcomes],
        "dups": [o.possible_duplicate for o in outcomes],
        "part_ids": [p[0] for p in parts],
        "part_cids": [p[1] for p in parts],
        "part_nos": [p[2] for p in parts],
        "now": now,
        "node": me.node_id,
        "inc": me.incarnation,
    }
    async with conn.transaction():
        rows = await (await conn.execute(FINISH_SQL, params)).fetchall()
    applied = {r[0] for r in rows if r[1]}
    return Finished([i for i in ids if i in applied], [r[0] for r in rows if not r[1]])


def claimed_outcomes(
    sent: Sequence[SentItem],
    changes: Sequence[tuple[Transition, float]],
    claims: Mapping[str, tuple[Incarnation, int]],
    me: Incarnation,
) -> list[tuple[Incarnation, Outcome]]:
    """A group's answers as outcomes, each with the claim it answers (`claims`: the
    incarnation and epoch of each claimed message; one not there is `me`'s with epoch
    -1, which `finish` keeps as late)."""
    unknown = (me, -1)
    claimed = []
    for i, route, cids, _ in sent:
        owner, epoch = claims.get(i, unknown)
        claimed.append((owner, Outcome(i, epoch, State.SENT, route, tuple(cids))))
    for t, _ in changes:
        owner, epoch = claims.get(t.message_id, unknown)
        outcome = Outcome(
            t.message_id,
            epoch,
            t.target,
            t.route or "",
            (),
            t.error_code,
            t.due_at,
            t.attempts,
            bool(t.possible_duplicate),
        )
        claimed.append((owner, outcome))
    return claimed
