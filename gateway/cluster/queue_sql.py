"""The shared queue's state changes as SQL, for `queue_store.py`: a checked transition
with its event, a receipt matched by the carrier's id (or kept until its submit's
answer is recorded), and the expiry sweep. Each runs in the caller's transaction.

A transition checks the lifecycle table in its UPDATE (`state = ANY(sources)`), as the
SQLite store's `transitions.apply` does; only a refusal reads the row to say why.
Claimed rows' outcomes do not come here: they go through `outcomes.finish`, which also
checks the claim (owner, incarnation, epoch).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster.by_key import state_is
from gateway.cluster.nodes import Incarnation
from gateway.lifecycle import IllegalTransition, sources_of
from gateway.models import State
from gateway.store.transitions import Transition

Conn = AsyncConnection[TupleRow]
_CARRIER_LOCK_SPACE = 0x63726964  # "crid": the two-key advisory locks of carrier ids


async def lock_carrier_ids(conn: Conn, parts: Iterable[tuple[str, str]]) -> None:
    """Hold each (route, carrier id)'s advisory lock to the transaction's end, in one
    order. A receipt and its submit's answer, recorded on two nodes at once, would
    otherwise each miss the other's uncommitted row: the receipt finds no carrier id
    and waits in `early_receipts`, the answer looks there before that commits, and the
    message stays `sent`. Both take these locks first, so the later one sees the first."""
    keys = sorted(
        {
            int.from_bytes(
                hashlib.blake2b(f"{route}\x1f{cid}".encode(), digest_size=4).digest(),
                "big",
                signed=True,
            )
            for route, cid in parts
        }
    )
    if keys:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::integer[]) AS k ORDER BY k",
            (_CARRIER_LOCK_SPACE, keys),
        )


_APPLY = """
UPDATE messages SET state = %(target)s, updated_at = %(now)s,
    route = coalesce(%(route)s, route), error_code = coalesce(%(code)s, error_code),
    due_at = coalesce(%(due)s, due_at),
    attempts = coalesce(%(attempts)s, attempts) + %(count)s,
    possible_duplicate = coalesce(%(dup)s, possible_duplicate)
WHERE id = %(id)s AND state = ANY(%(sources)s)
RETURNING attempts
"""

INSERT_EVENT = (
    "INSERT INTO message_events (message_id, at, state, route, carrier_id, error_code,"
    " attempt, node_id, incarnation) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)

GIVE_BACK_SQL = f"""
WITH back AS (
    UPDATE messages m SET state = '{State.QUEUED.value}', updated_at = %(now)s,
        attempts = u.attempts, error_code = %(code)s, owner_node = NULL,
        owner_incarnation = NULL
    FROM unnest(%(ids)s::text[], %(attempts)s::int[]) AS u(id, attempts)
    WHERE m.id = u.id AND {state_is(State.SENDING, "m")} AND m.owner_node = %(node)s
        AND m.owner_incarnation = %(inc)s
    RETURNING m.id, m.attempts
)
INSERT INTO message_events (message_id, at, state, route, error_code, attempt, node_id,
    incarnation)
SELECT id, %(now)s, '{State.QUEUED.value}', %(route)s, %(code)s, attempts, %(node)s, %(inc)s
FROM back
RETURNING message_id
"""  # noqa: S608 - fixed state names

RECEIPT_FINAL = {"delivered": State.DELIVERED, "failed": State.FAILED, "expired": State.EXPIRED}


async def apply(
    conn: Conn, t: Transition, now: float, me: Incarnation, *, only_from: State | None = None
) -> int:
    """Apply `t` and write its event; raises `IllegalTransition` (changing nothing) if
    the lifecycle forbids it, `LookupError` if there is no such message. Returns the
    row's attempts."""
    sources = sources_of(t.target)
    if only_from is not None:
        sources = sources & {only_from}
    # A claimed row changes only through `outcomes.finish`, which checks its claim.
    sources = sources - {State.SENDING}
    params = {
        "target": t.target.value,
        "now": now,
        "route": None if t.route_kept else t.route,
        "code": t.error_code,
        "due": t.due_at,
        "attempts": t.attempts,
        "count": int(t.count_attempt),
        "dup": t.possible_duplicate,
        "id": t.message_id,
        "sources": [s.value for s in sources],
    }
    row = await (await conn.execute(_APPLY, params)).fetchone()
    if row is None:
        found = await (
            await conn.execute("SELECT state FROM messages WHERE id = %s", (t.message_id,))
        ).fetchone()
        if found is None:
            raise LookupError(t.message_id)
        raise IllegalTransition(State(found[0]), t.target)
    await conn.execute(
        INSERT_EVENT,
        (
            t.message_id,
            now,
            t.target.value,
            t.route,
            t.carrier_id,
            t.error_code,
            row[0],
            me.node_id,
            me.incarnation,
        ),
    )
    return int(row[0])


async def apply_receipt(
    conn: Conn,
    route: str,
    carrier_id: str,
    state: str,
    error_code: str | None,
    now: float,
    me: Incarnation,
) -> tuple[str, State] | bool | None:
    """A receipt for a known part: (message id, new state) when the message changed,
    None when it did not, False when no such part is recorded (yet)."""
    part = await (
        await conn.execute(
            "SELECT message_id, state FROM carrier_ids WHERE route = %s AND carrier_id = %s"
            " FOR UPDATE",
            (route, carrier_id),
        )
    ).fetchone()
    if part is None:
        return False
    target = RECEIPT_FINAL.get(state)
    if target is None or part[1] in RECEIPT_FINAL:  # intermediate, or a duplicate
        return None
    message_id = str(part[0])
    await conn.execute(
        "UPDATE carrier_ids SET state = %s, error_code = %s WHERE route = %s AND carrier_id = %s",
        (state, error_code, route, carrier_id),
    )
    if target is State.DELIVERED:
        pending = await (
            await conn.execute(
                "SELECT 1 FROM carrier_ids WHERE message_id = %s AND state <> 'delivered'",
                (message_id,),
            )
        ).fetchone()
        if pending is not None:  # delivered once no part is left undelivered
            return None
    transition = Transition(
        message_id, target, route=route, carrier_id=carrier_id, error_code=error_code
    )
    try:
        await apply(conn, transition, now, me, only_from=State.SENT)
    except (IllegalTransition, LookupError):
        return None
    return message_id, target


async def receipt(
    conn: Conn,
    route: str,
    carrier_ids: tuple[str, ...],
    state: str,
    error_code: str | None,
    now: float,
    me: Incarnation,
) -> tuple[str, State] | None:
    """`apply_receipt` for the first of `carrier_ids` known; if none is, the receipt
    is kept in `early_receipts` until the submit's answer is recorded."""
    await lock_carrier_ids(conn, [(route, c) for c in carrier_ids])
    for candidate in carrier_ids:
        applied = await apply_receipt(conn, route, candidate, state, error_code, now, me)
        if applied is not False:
            return applied if isinstance(applied, tuple) else None
    await conn.execute(
        "INSERT INTO early_receipts VALUES (%s, %s, %s, %s, %s) ON CONFLICT (route, carrier_id)"
        " DO UPDATE SET state = excluded.state, error_code = excluded.error_code, at = excluded.at",
        (route, carrier_ids[0], state, error_code, now),
    )
    return None


async def early_receipts(
    conn: Conn, route: str, carrier_ids: tuple[str, ...], now: float, me: Incarnation
) -> State | None:
    """Apply the receipts that overtook these parts' submit answer; the message's state
    after them, None if none was waiting."""
    rows = await (
        await conn.execute(
            "DELETE FROM early_receipts WHERE route = %s AND carrier_id = ANY(%s)"
            " RETURNING carrier_id, state, error_code",
            (route, list(carrier_ids)),
        )
    ).fetchall()
    after = None
    for cid, state, code in rows:
        applied = await apply_receipt(conn, route, cid, state, code, now, me)
        if isinstance(applied, tuple):
            after = applied[1]
    return after


EXPIRE_SQL = f"""
WITH gone AS (
    UPDATE messages SET state = '{State.EXPIRED.value}', updated_at = %(now)s,
        error_code = 'gateway:expired'
    WHERE id IN (
        SELECT id FROM messages
        WHERE state IN ('{State.QUEUED.value}', '{State.SCHEDULED.value}')
            AND expires_at <= %(now)s
        ORDER BY expires_at LIMIT %(n)s FOR UPDATE SKIP LOCKED)
    RETURNING id, attempts
), logged AS (
    INSERT INTO message_events (message_id, at, state, error_code, attempt, node_id, incarnation)
    SELECT id, %(now)s, '{State.EXPIRED.value}', 'gateway:expired', attempts, %(node)s, %(inc)s
    FROM gone
)
SELECT id FROM gone
"""  # noqa: S608 - fixed state names


# The accept's and the claim's statements (`queue_store.ClusterQueue`).
INSERT_MESSAGE = (
    "INSERT INTO messages (id, token_id, priority, state, route_group, to_ct, to_index,"
    " body_ct, reference_ct, callback_ct, encoding, segments, route_hint, category,"
    " created_at, updated_at, send_at, expires_at, due_at, purpose, error_code,"
    " quiet_override, held_for, held_by) VALUES"
    " (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
)

INSERT_MINTED = (
    "INSERT INTO link_tokens (token_hash, link_id, message_id, created_at, expires_at)"
    " VALUES (%s, %s, %s, %s, %s)"
)

CLAIM_IDS = f"""
WITH c AS (
    SELECT id FROM messages
    WHERE id = ANY(%(ids)s) AND {state_is(State.QUEUED)} AND expires_at > %(now)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE messages m SET state = '{State.SENDING.value}', route = %(route)s,
        owner_node = %(node)s, owner_incarnation = %(inc)s, claim_epoch = m.claim_epoch + 1,
        attempts = m.attempts + 1, updated_at = %(now)s, claimed_at = clock_timestamp()
    FROM c WHERE m.id = c.id
    RETURNING m.id, m.claim_epoch, m.to_ct, m.body_ct, m.encoding, m.priority, m.attempts,
        m.possible_duplicate
), logged AS (
    INSERT INTO message_events (message_id, at, state, route, attempt, node_id, incarnation)
    SELECT id, %(now)s, '{State.SENDING.value}', %(route)s, attempts, %(node)s, %(inc)s
    FROM claimed
)
SELECT * FROM claimed
"""  # noqa: S608 - fixed state names

# The claim by query: due rows in the claim's order, locked; a row another claimer
# holds is skipped (it is theirs).
CLAIM_DUE = f"""
SELECT id FROM messages
WHERE state = '{State.QUEUED.value}' AND due_at <= %(now)s AND expires_at > %(now)s
ORDER BY priority, due_at, id LIMIT %(n)s
FOR UPDATE SKIP LOCKED
"""  # noqa: S608 - fixed state names

# Queued rows of the group whose recipient opted out (of everything, or of the
# message's purpose), locked: they become `blocked` in the claim's transaction.
OPTED_OUT_ROWS = f"""
SELECT m.id FROM messages m
WHERE m.id = ANY(%(ids)s) AND {state_is(State.QUEUED, "m")}
    AND coalesce(m.purpose, '') <> 'compliance'
    AND EXISTS (SELECT 1 FROM opt_outs o WHERE o.contact_idx = m.to_index
        AND (o.scope = 'all' OR o.scope = m.purpose))
FOR UPDATE OF m SKIP LOCKED
"""  # noqa: S608 - fixed state names
