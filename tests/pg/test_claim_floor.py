"""The claim by query from its floors (`claim_floor.py`, S9): with the xmin horizon held
it reads a few buffers however many rows were claimed before; a row left below a floor
is claimed after the sweep; classes keep their own floors; claimers never share a row.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter
from typing import Any

import psycopg

from gateway.cluster import nodes
from gateway.cluster.claim_floor import SLACK, ClaimFloors
from gateway.cluster.claims import CLAIM_FROM_FLOOR_SQL, SORT_OFF, claim
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation
from gateway.models import Priority
from tests.pg.queue_rows import NOW, add_messages

ROUNDS, BATCH = 30, 100  # 3,000 claimed while the horizon is held
SCANS = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Seq Scan"}
# Buffers a floored claim of 3 rows may read (15 measured): the index's upper levels,
# the entries of the last claim's rows still within SLACK (dead, one batch), the fresh
# rows' heap. From the start of the range it reads the 3,000 dead ones too (107).
FLOORED_BOUND = 25


async def node(pool: Pool, name: str) -> Incarnation:
    async with pool.connection() as conn:
        return await nodes.register(conn, name, 600)


def scanned(plan: dict[str, Any]) -> int:
    own = 0
    if plan.get("Relation Name") == "messages" and plan["Node Type"] in SCANS:
        own = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
    return own + sum(scanned(child) for child in plan.get("Plans", []))


async def claim_buffers(pool: Pool, me: Incarnation, floor: float, now: float) -> int:
    params = {"group": "g", "prio": int(Priority.NORMAL), "floor": floor, "now": now, "n": 10,
              "route": "r", "node": me.node_id, "inc": me.incarnation, "stamp": None}  # fmt: skip
    async with pool.connection() as conn, conn.transaction(force_rollback=True):
        await conn.execute(SORT_OFF)  # as `claims.claim` does
        cur = await conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + CLAIM_FROM_FLOOR_SQL, params
        )
        row = await cur.fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    return scanned(plan[0]["Plan"])


async def test_a_claim_from_its_floor_reads_few_buffers_with_xmin_held(
    pool: Pool, held_horizon: psycopg.AsyncConnection[Any]
) -> None:
    me = await node(pool, "a")
    floors = ClaimFloors()
    for b in range(ROUNDS):
        due = NOW - 1000 + 10 * b
        await add_messages(pool, BATCH, prefix=f"old{b:03d}", due_at=due)
        async with pool.connection() as conn:
            got = await claim(conn, me, "g", "r", BATCH, due, floors=floors)
        assert len(got.claimed) == BATCH
    assert floors.bound("g", Priority.NORMAL) == NOW - 1000 + 10 * (ROUNDS - 1) - SLACK
    await add_messages(pool, 3, prefix="new", due_at=NOW - 10)
    async with pool.connection() as conn:
        await conn.execute("ANALYZE messages")
    floored = await claim_buffers(pool, me, floors.bound("g", Priority.NORMAL), NOW)
    from_start = await claim_buffers(pool, me, -math.inf, NOW)
    assert floored <= FLOORED_BOUND < 3 * FLOORED_BOUND < from_start, (floored, from_start)
    async with pool.connection() as conn:
        got = await claim(conn, me, "g", "r", 10, NOW, floors=floors)
    assert [c.id for c in got.claimed] == ["new-000000", "new-000001", "new-000002"]


async def test_a_row_below_the_floor_is_claimed_after_the_sweep(pool: Pool) -> None:
    me = await node(pool, "a")
    floors = ClaimFloors()
    await add_messages(pool, 2, prefix="first", due_at=NOW - 10)
    async with pool.connection() as conn:
        assert len((await claim(conn, me, "g", "r", 5, NOW, floors=floors)).claimed) == 2
    # A recovery's requeue keeps its old due time: under the floor, the claim misses it.
    await add_messages(pool, 1, prefix="requeued", due_at=NOW - 600)
    async with pool.connection() as conn:
        assert (await claim(conn, me, "g", "r", 5, NOW, floors=floors)).claimed == []
        async with conn.transaction():
            assert await floors.sweep(conn, "g") == 1
        got = await claim(conn, me, "g", "r", 5, NOW, floors=floors)
    assert [c.id for c in got.claimed] == ["requeued-000000"]
    floors.lower("g", Priority.NORMAL, NOW - 900)  # this node's own requeue: at once
    assert floors.bound("g", Priority.NORMAL) == NOW - 900 - SLACK


async def test_critical_is_claimed_first_whatever_the_bulk_floor(pool: Pool) -> None:
    me = await node(pool, "a")
    floors = ClaimFloors()
    await add_messages(pool, 5, priority=Priority.BULK, prefix="bulk", due_at=NOW - 50)
    async with pool.connection() as conn:
        first = await claim(conn, me, "g", "r", 3, NOW, floors=floors)
        await add_messages(pool, 2, priority=Priority.CRITICAL, prefix="crit", due_at=NOW - 1)
        second = await claim(conn, me, "g", "r", 3, NOW, floors=floors)
    assert [c.id for c in first.claimed] == ["bulk-000000", "bulk-000001", "bulk-000002"]
    assert [c.id for c in second.claimed] == ["crit-000000", "crit-000001", "bulk-000003"]


async def test_claimers_with_floors_never_take_a_row_twice(pool: Pool) -> None:
    ids: list[str] = []
    for prio in Priority:
        for k in range(3):
            due = NOW - 100 * (k + 1)
            ids += await add_messages(pool, 50, priority=prio, prefix=f"p{prio}{k}", due_at=due)
    incarnations = [await node(pool, "a"), await node(pool, "b")]
    rng = random.Random(9)

    async def claimer(me: Incarnation) -> list[str]:
        floors, got = ClaimFloors(), []
        async with pool.connection() as conn:
            while True:
                batch = await claim(conn, me, "g", "r", rng.randint(1, 25), NOW, floors=floors)
                if not batch.claimed:
                    async with conn.transaction():
                        if not await floors.sweep(conn, "g"):
                            return got
                    continue
                got += [c.id for c in batch.claimed]

    taken = await asyncio.gather(*(claimer(incarnations[k % 2]) for k in range(4)))
    counts = Counter(i for got in taken for i in got)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
