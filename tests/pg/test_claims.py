"""Claims on the shared PostgreSQL queue: the schema, the plan, the order, concurrency."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from asyncio.subprocess import PIPE
from collections import Counter
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.cluster import nodes
from gateway.cluster.claims import CLAIM_SQL, claim
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation, LeaseLost
from gateway.cluster.schema import MIGRATIONS, migrate
from gateway.models import Priority
from tests.pg.queue_rows import NOW, add_messages, rows


async def node(pool: Pool, name: str, lease: float = 60.0) -> Incarnation:
    async with pool.connection() as conn:
        return await nodes.register(conn, name, lease)


async def test_migrations_apply_once_even_when_nodes_start_together(pg_dsn: str) -> None:
    async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=4, open=False) as pool:

        async def run() -> int:
            async with pool.connection() as conn:
                return await migrate(conn)

        assert await asyncio.gather(run(), run(), run()) == [len(MIGRATIONS)] * 3
        assert await run() == len(MIGRATIONS)
        assert await rows(pool, "SELECT version FROM cluster_schema") == [(len(MIGRATIONS),)]


def plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += plan_nodes(child)
    return found


async def test_claim_uses_the_one_partial_index_at_100k_queued(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
            " encoding, segments, created_at, updated_at, due_at, expires_at)"
            " SELECT 'p-' || i, i %% 4, CASE WHEN i %% 10 = 0 THEN 'sent' ELSE 'queued' END,"
            " 'g' || (i %% 5), '\\x01', '\\x02', '\\x03', 'gsm7', 1, 0, 0, %s + (i %% 1000), %s"
            " FROM generate_series(1, 100000) i",
            (NOW - 500, NOW + 3600),
        )
        await conn.execute("ANALYZE messages")
        params = {
            "group": "g3", "now": NOW, "n": 50, "route": "r", "node": "a", "inc": 1,
            "stamp": None,
        }  # fmt: skip
        cur = await conn.execute("EXPLAIN (FORMAT JSON) " + CLAIM_SQL, params)
        row = await cur.fetchone()
    assert row is not None
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    found = plan_nodes(plan[0]["Plan"])
    scans = [n for n in found if n.get("Relation Name") == "messages"]
    assert any(n.get("Index Name") == "messages_claim" for n in scans), scans
    assert not any(n["Node Type"] == "Seq Scan" for n in scans), scans
    assert not any(n["Node Type"] in ("Sort", "Incremental Sort") for n in found)


async def test_claims_in_class_due_and_id_order_only_what_is_due_in_the_group(
    pool: Pool,
) -> None:
    me = await node(pool, "a")
    await add_messages(pool, 3, priority=Priority.BULK, prefix="bulk", due_at=NOW - 100)
    await add_messages(pool, 2, priority=Priority.CRITICAL, prefix="crit", due_at=NOW - 1)
    await add_messages(pool, 2, priority=Priority.NORMAL, prefix="later", due_at=NOW + 60)
    await add_messages(pool, 2, priority=Priority.CRITICAL, prefix="other", group="g2")
    async with pool.connection() as conn:
        first = await claim(conn, me, "g", "smsc", 3, NOW)
        rest = await claim(conn, me, "g", "smsc", 10, NOW)
        none = await claim(conn, me, "g", "smsc", 10, NOW)
    assert [c.id for c in first.claimed] == ["crit-000000", "crit-000001", "bulk-000000"]
    assert [c.id for c in rest.claimed] == ["bulk-000001", "bulk-000002"]
    assert none.claimed == []
    assert all(c.epoch == 1 and c.attempts == 1 for c in first.claimed + rest.claimed)
    sending = await rows(
        pool,
        "SELECT state, owner_node, owner_incarnation, route, claimed_at IS NOT NULL"
        " FROM messages WHERE id LIKE 'crit-%' OR id LIKE 'bulk-%'",
    )
    assert set(sending) == {("sending", "a", me.incarnation, "smsc", True)}
    events = await rows(pool, "SELECT message_id, state, node_id FROM message_events")
    assert Counter(e[1] for e in events) == {"sending": 5}


async def test_a_node_whose_lease_ended_claims_nothing(pool: Pool) -> None:
    me = await node(pool, "a")
    await add_messages(pool, 5)
    async with pool.connection() as conn:
        await conn.execute("UPDATE nodes SET lease_until = clock_timestamp()")
        with pytest.raises(LeaseLost):
            await claim(conn, me, "g", "smsc", 5, NOW)
    assert await rows(pool, "SELECT count(*) FROM messages WHERE state = 'queued'") == [(5,)]


async def test_concurrent_claimers_never_get_the_same_row(pool: Pool, pg_dsn: str) -> None:
    """Six claimers on their own connections (two nodes) and two in processes of their
    own, random batch sizes: every message is claimed exactly once, with one claim event
    and epoch 1."""
    total = 3000
    ids = await add_messages(pool, total)
    incarnations = [await node(pool, "a"), await node(pool, "b")]
    rng = random.Random(18)
    start = asyncio.Event()
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.pg.claim_child",
            pg_dsn,
            f"p{k}",
            str(k),
            stdin=PIPE,
            stdout=PIPE,
        )
        for k in range(2)
    ]

    async def child(proc: asyncio.subprocess.Process) -> list[str]:
        assert proc.stdin is not None and proc.stdout is not None
        assert await proc.stdout.readline() == b"ready\n"
        await start.wait()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        got: list[str] = json.loads(await proc.stdout.readline())
        assert await proc.wait() == 0
        return got

    async def claimer(k: int) -> list[str]:
        me = incarnations[k % 2]
        got: list[str] = []
        async with pool.connection() as conn:
            await start.wait()
            while True:
                result = await claim(conn, me, "g", f"r{k}", rng.randint(1, 40), NOW)
                if not result.claimed:
                    remaining = await conn.execute(
                        "SELECT count(*) FROM messages WHERE state = 'queued'"
                    )
                    left = await remaining.fetchone()
                    await conn.commit()
                    if left is not None and left[0] == 0:
                        return got
                got += [c.id for c in result.claimed]

    tasks = [asyncio.create_task(child(p)) for p in children]
    tasks += [asyncio.create_task(claimer(k)) for k in range(6)]
    start.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 50)
    claimed = [m for got in results for m in got]
    assert len(claimed) == total
    assert set(claimed) == set(ids)
    assert await rows(
        pool, "SELECT count(*), min(claim_epoch), max(claim_epoch) FROM messages"
    ) == [(total, 1, 1)]
    assert await rows(pool, "SELECT count(*), count(DISTINCT message_id) FROM message_events") == [
        (total, total)
    ]
