"""S6: a critical accept takes a connection kept for it (`gateway/cluster/
critical_lane.py`) rather than queue behind the node pool's bulk work, and the node
pool's turn when that connection is taken."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.cluster import critical_lane
from gateway.cluster.lease import Pool
from gateway.cluster.queue_store import ClusterQueue
from gateway.models import Priority
from gateway.store.store import ClaimedMessage
from tests.pg.test_store_contract import NOW, ROUTE, Backend, _cluster, message

GUARD = 30.0  # seconds: only a hang's guard, never reached when it works


@pytest.fixture
async def lane_cluster(migrated_dsn: str) -> AsyncIterator[tuple[Backend, Pool]]:
    async with (
        AsyncConnectionPool(migrated_dsn, min_size=2, max_size=2, open=False) as pool,
        AsyncConnectionPool(migrated_dsn, min_size=1, max_size=1, open=False) as lane,
    ):
        await lane.wait()
        yield await _cluster(pool), lane


async def _hold_all(pool: Pool, n: int, release: asyncio.Event) -> list[asyncio.Task[None]]:
    """`n` tasks each holding one of `pool`'s connections until `release`, once all do."""
    held = asyncio.Semaphore(0)

    async def hold() -> None:
        async with pool.connection():
            held.release()
            await release.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(n)]
    for _ in range(n):
        await asyncio.wait_for(held.acquire(), GUARD)
    return tasks


async def test_a_critical_accept_answers_while_bulk_work_holds_every_pooled_connection(
    lane_cluster: tuple[Backend, Pool],
) -> None:
    """Every connection of the node pool is held (the rounds' claims and outcomes): a
    critical accept and its claim still commit, on the lane; on the old code it waited
    for the node pool."""
    backend, lane = lane_cluster
    queue, pool = backend.b, backend.pool
    assert isinstance(queue, ClusterQueue) and pool is not None
    queue.lane = lane
    release = asyncio.Event()
    holders = await _hold_all(pool, 2, release)
    urgent = message(1, priority=Priority.CRITICAL)
    claimed = queue.claim_group_soon([urgent.id], ROUTE, NOW)
    await asyncio.wait_for(queue.accept([urgent]), GUARD)
    [got] = claimed.result()
    assert isinstance(got, ClaimedMessage)
    assert not any(h.done() for h in holders)
    release.set()
    await asyncio.gather(*holders)


async def test_the_lane_is_for_critical_accepts_and_a_taken_lane_falls_back_to_the_pool(
    lane_cluster: tuple[Backend, Pool],
) -> None:
    """A bulk accept takes the node pool; a critical one the lane while it has a free
    connection, else the node pool (no longer a wait than before the lane)."""
    backend, lane = lane_cluster
    queue, pool = backend.b, backend.pool
    assert isinstance(queue, ClusterQueue) and pool is not None
    queue.lane = lane
    bulk, urgent = [message(2)], [message(3, priority=Priority.CRITICAL)]
    assert critical_lane.for_accept(pool, None, urgent) is pool
    assert critical_lane.for_accept(pool, lane, bulk) is pool
    assert critical_lane.for_accept(pool, lane, urgent) is lane
    release = asyncio.Event()
    [holder] = await _hold_all(lane, 1, release)
    assert critical_lane.for_accept(pool, lane, urgent) is pool
    await asyncio.wait_for(queue.accept(urgent), GUARD)
    stored = await queue.message(urgent[0].id)
    assert stored is not None and stored.state.value == "queued"
    release.set()
    await holder
