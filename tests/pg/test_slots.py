"""Bind slots: a carrier's session cap held across nodes, freed after a dead node's grace."""

from __future__ import annotations

import asyncio

import pytest

from gateway.cluster import slots
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation, register
from tests.pg.queue_rows import rows


async def node(pool: Pool, name: str) -> Incarnation:
    async with pool.connection() as conn:
        return await register(conn, name, 60.0)


async def take(pool: Pool, me: Incarnation, route: str, grace: float = 60.0) -> int | None:
    async with pool.connection() as conn:
        return await slots.acquire(conn, me, route, 2, grace)


async def test_three_nodes_racing_for_a_two_session_cap_get_two_slots(pool: Pool) -> None:
    nodes = [await node(pool, f"n{k}") for k in range(3)]
    got = await asyncio.gather(*(take(pool, me, "smsc") for me in nodes))
    assert sorted(s for s in got if s is not None) == [0, 1] and got.count(None) == 1
    holders = await rows(pool, "SELECT slot, node_id FROM route_slots WHERE route = 'smsc'")
    assert len({h[1] for h in holders}) == 2


async def test_a_dead_nodes_slot_frees_only_after_the_carriers_grace(pool: Pool) -> None:
    a, b, c = [await node(pool, name) for name in ("a", "b", "c")]
    for route, grace in (("slow-carrier", 3600.0), ("quick-carrier", 0.0)):
        assert await take(pool, a, route, grace) == 0
        assert await take(pool, b, route, grace) == 1
        assert await take(pool, c, route, grace) is None
    async with pool.connection() as conn:  # a dies: its lease ends now
        await conn.execute(
            "UPDATE nodes SET lease_until = clock_timestamp() WHERE incarnation = %s",
            (a.incarnation,),
        )
    assert await take(pool, c, "slow-carrier", 3600.0) is None  # its session may live on
    assert await take(pool, c, "quick-carrier", 0.0) == 0
    async with pool.connection() as conn:  # b unbinds cleanly: free at once
        await slots.release(conn, b, "slow-carrier", 1)
    assert await take(pool, c, "slow-carrier", 3600.0) == 1
    with pytest.raises(ValueError, match="max_binds"):
        async with pool.connection() as conn:
            await slots.acquire(conn, c, "x", 0, 1.0)
