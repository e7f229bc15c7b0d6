"""S9's cause, pinned down (issue 18): with a REPEATABLE READ transaction holding the xmin
horizon, the statements of a node's claim and of its outcomes reach their rows through
the primary key, so what they read does not grow with the messages sent meanwhile.

Measured deterministically, not timed: `EXPLAIN (ANALYZE, BUFFERS)` counts the shared
buffers the scans of `messages` touch. Each control runs the same statement with the
plain `state = '...'` test (what `by_key.state_is` replaced): it walks the dead entries
the churn left, so the bound would fail without the fix.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from gateway.cluster import nodes, queue_sql
from gateway.cluster.by_key import state_is
from gateway.cluster.consent_claim import SUBJECTS_SQL
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation
from gateway.cluster.outcomes import FINISH_SQL, Outcome, finish
from gateway.models import State
from tests.pg.queue_rows import NOW, add_messages

CHURN = 3000  # messages queued, claimed and sent while the horizon is held
BATCH = 100
PER_ROW = 8  # buffers the scans may touch per row named (index descents, heap, versions)
SCANS = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Seq Scan"}


async def churn(pool: Pool, me: Incarnation) -> None:
    """CHURN messages through `queued`, a claim by id and a `sent` outcome, as a node's
    scheduler sends them: each leaves dead versions no VACUUM may remove."""
    for b in range(CHURN // BATCH):
        ids = await add_messages(pool, BATCH, prefix=f"old{b:03d}")
        async with pool.connection() as conn:
            async with conn.transaction():
                await nodes.lock_live(conn, me)
                params = {"ids": ids, "route": "r", "now": NOW, "node": me.node_id}
                await conn.execute(queue_sql.CLAIM_IDS, {**params, "inc": me.incarnation})
            done = [Outcome(i, 1, State.SENT, "r", (f"c-{i}",)) for i in ids]
            assert len((await finish(conn, me, done, NOW)).applied) == BATCH


def scanned(plan: dict[str, Any]) -> int:
    """Shared buffers (hit or read) the plan's scans of `messages` touched."""
    own = 0
    if plan.get("Relation Name") == "messages" and plan["Node Type"] in SCANS:
        own = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    return own + sum(scanned(child) for child in plan.get("Plans", []))


async def buffers(pool: Pool, sql: str, params: Any) -> int:
    """`scanned` of `sql` run once, its changes rolled back."""
    async with pool.connection() as conn, conn.transaction(force_rollback=True):
        cur = await conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
        row = await cur.fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return scanned(plan[0]["Plan"])


def plain(sql: str, state: State) -> str:
    """`sql` with the state test any index may answer (as before the fix); `m.state`
    keeps its alias."""
    assert state_is(state) in sql
    return sql.replace(state_is(state), f"state = '{state.value}'")


async def test_claim_and_finish_read_few_buffers_however_far_back_xmin_is_held(
    pool: Pool, held_horizon: psycopg.AsyncConnection[Any]
) -> None:
    async with pool.connection() as conn:
        me = await nodes.register(conn, "a", 600)
        xmin = await (
            await conn.execute(
                "SELECT backend_xmin FROM pg_stat_activity WHERE pid = %s",
                (held_horizon.info.backend_pid,),
            )
        ).fetchone()
    assert xmin is not None and xmin[0] is not None  # the horizon is held
    await churn(pool, me)
    fresh = await add_messages(pool, 3, prefix="new")
    async with pool.connection() as conn:
        await conn.execute("ANALYZE messages")  # the planner sees few rows queued or sending
    bound = PER_ROW * len(fresh)

    claim = {"ids": fresh, "route": "r", "now": NOW, "node": me.node_id, "inc": me.incarnation}
    statements = [
        (queue_sql.OPTED_OUT_ROWS, claim, State.QUEUED),
        (SUBJECTS_SQL, (fresh,), State.QUEUED),
        (queue_sql.CLAIM_IDS, claim, State.QUEUED),
    ]
    for sql, params, state in statements:
        assert await buffers(pool, sql, params) <= bound, sql
        assert await buffers(pool, plain(sql, state), params) > 3 * bound, sql

    async with pool.connection() as conn:
        await conn.execute(queue_sql.CLAIM_IDS, claim)  # now `sending`, epoch 1
    n = len(fresh)
    outcome = {
        "ids": fresh, "epochs": [1] * n, "states": [State.SENT.value] * n, "routes": ["r"] * n,
        "codes": [None] * n, "dues": [None] * n, "attempts": [None] * n, "dups": [False] * n,
        "part_ids": fresh, "part_cids": [f"c-{i}" for i in fresh], "part_nos": [0] * n,
        "now": NOW, "node": me.node_id, "inc": me.incarnation,
    }  # fmt: skip
    give_back = {**claim, "attempts": [1] * n, "code": "x"}
    for sql, params in ((FINISH_SQL, outcome), (queue_sql.GIVE_BACK_SQL, give_back)):
        assert await buffers(pool, sql, params) <= bound, sql
        assert await buffers(pool, plain(sql, State.SENDING), params) > 3 * bound, sql
