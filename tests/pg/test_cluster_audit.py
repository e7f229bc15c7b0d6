"""The audit trail in the shared store: a chain per node, anchors, verified as a set."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from gateway.cluster import audit
from gateway.cluster.lease import Pool

KEY = bytes(range(32))


async def append(pool: Pool, node: str, count: int, start: int = 0) -> list[int]:
    seqs = []
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        for n in range(start, start + count):
            seqs.append(await audit.append(conn, KEY, node, 1000.0 + n, "system", "probe", n=n))
    return seqs


async def anchor(pool: Pool, node: str, *, only_if_moved: bool = False) -> int | None:
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        return await audit.anchor(conn, KEY, node, 2000.0, only_if_moved=only_if_moved)


async def check(pool: Pool) -> audit.ClusterVerification:
    async with pool.connection() as conn:
        return await audit.verify(conn, KEY)


async def tamper(pool: Pool, statement: str) -> None:
    """What someone with write access to the database can do (the triggers lifted)."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        await conn.execute(statement.encode())


async def test_parallel_writers_on_one_node_never_fork_its_chain(pool: Pool) -> None:
    """Head read and insert are one step under the node's lock: four sessions appending
    to one node's chain at once still make seq 1..N, each following the last."""
    got = await asyncio.gather(*(append(pool, "gw1", 25, start=i * 25) for i in range(4)))
    assert sorted(s for seqs in got for s in seqs) == list(range(1, 101))
    await append(pool, "gw2", 10)
    result = await check(pool)
    assert result.ok, result.problems
    assert [(h.node_id, h.entries, h.seq) for h in result.heads] == [
        ("gw1", 100, 100),
        ("gw2", 10, 10),
    ]


async def test_the_trail_is_append_only_in_the_database_too(pool: Pool) -> None:
    await append(pool, "gw1", 3)
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        for statement in (
            "UPDATE audit_log SET actor = 'x'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                await conn.execute(statement.encode())


async def test_a_changed_row_in_any_chain_is_found(pool: Pool) -> None:
    await append(pool, "gw1", 20)
    await append(pool, "gw2", 20)
    await anchor(pool, "gw1")
    await tamper(
        pool, "UPDATE audit_log SET detail = '{\"n\":99}' WHERE node_id = 'gw2' AND seq = 5"
    )
    result = await check(pool)
    assert not result.ok
    assert "node gw2: entry 5 was changed after it was written" in result.problems


async def test_an_anchor_finds_a_chain_cut_back_or_removed_whole(pool: Pool) -> None:
    """Each chain alone still verifies after its newest entries, or all of them, are
    deleted: the anchor naming their heads is what shows it."""
    await append(pool, "gw1", 30)
    await append(pool, "gw2", 12)
    await anchor(pool, "gw2")
    await append(pool, "gw1", 5, start=30)  # after the anchor: not covered by it
    assert (await check(pool)).ok

    await tamper(pool, "DELETE FROM audit_log WHERE node_id = 'gw1' AND seq > 25")
    await tamper(pool, "DELETE FROM audit_log WHERE node_id = 'gw2'")
    result = await check(pool)
    assert not result.ok
    assert result.problems == [
        "anchor 1: node gw1's entry 30 is missing or changed",
        "anchor 1: node gw2's entry 12 is missing or changed",
    ]


async def test_a_changed_or_deleted_anchor_is_found(pool: Pool) -> None:
    await append(pool, "gw1", 3)
    for _ in range(3):
        await anchor(pool, "gw1")
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        await conn.execute("ALTER TABLE audit_anchors DISABLE TRIGGER USER")
        await conn.execute("UPDATE audit_anchors SET heads = '{}' WHERE seq = 2")
    assert (await check(pool)).problems == ["anchor 2 was changed after it was written"]
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        await conn.execute("DELETE FROM audit_anchors WHERE seq = 2")
    assert (await check(pool)).problems == ["anchor 2 is missing or out of place"]


async def test_a_periodic_anchor_is_written_only_when_some_head_moved(pool: Pool) -> None:
    await append(pool, "gw1", 2)
    assert await anchor(pool, "gw1", only_if_moved=True) == 1
    assert await anchor(pool, "gw2", only_if_moved=True) is None  # nothing new: idle
    await append(pool, "gw2", 1)
    assert await anchor(pool, "gw2", only_if_moved=True) == 2
    result = await check(pool)
    assert result.ok and result.anchors == 2
