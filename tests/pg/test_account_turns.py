"""S6 on a carrier account the nodes share: a round's claims never sit on a pooled
connection waiting for the account's row, nor does a settle (`gateway/cluster/
account_takes.py`). Before, every round claim waited for the row on one of the node's
few connections, so a critical POST waited for a connection behind them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.cluster import buckets
from gateway.cluster.nodes import register
from gateway.cluster.queue_store import ClusterQueue
from gateway.models import Priority
from gateway.store.claim_check import ACCOUNT_BUSY, Held
from gateway.store.store import ClaimedMessage
from tests.pg.test_store_contract import NOW, ROUTE, Backend, _cluster, message

POOL = 4  # connections: fewer than the round claims below
ROUNDS = 6
GUARD = 30.0  # seconds: only a hang's guard, never reached when it works


@pytest.fixture
async def cluster(migrated_dsn: str) -> AsyncIterator[Backend]:
    async with AsyncConnectionPool(migrated_dsn, min_size=1, max_size=POOL, open=False) as pool:
        yield await _cluster(pool)


async def test_round_claims_give_their_connections_back_while_the_accounts_row_is_held(
    cluster: Backend, migrated_dsn: str
) -> None:
    """Another session holds the account's row. More round claims than the pool has
    connections wait for it, and a critical accept on the same account still gets a
    connection and answers (its message left to the round: `ACCOUNT_BUSY`); on the old
    code the round claims held every connection until the row was free. Once it is,
    the round claims all claim their messages."""
    queue = cluster.b
    assert isinstance(queue, ClusterQueue) and cluster.pool is not None
    async with cluster.pool.connection() as conn:
        await buckets.configure(conn, "acme", 100.0, 10, reserve=2)
    queue.accounts[ROUTE] = "acme"
    bulk = [message(100 + i) for i in range(ROUNDS)]
    urgent = message(200, priority=Priority.CRITICAL)
    await queue.accept(bulk)
    async with (
        await psycopg.AsyncConnection.connect(migrated_dsn) as holder,  # another node's
        await psycopg.AsyncConnection.connect(migrated_dsn, autocommit=True) as watcher,
    ):
        await holder.execute("SELECT 1 FROM rate_accounts WHERE account = 'acme' FOR UPDATE")
        rounds = [asyncio.create_task(queue.claim_group([m.id], ROUTE, NOW)) for m in bulk]

        async def retrying() -> None:
            while queue.takes.busy_retries < 2:  # the first take, its connection given back
                await watcher.execute("SELECT 1")  # a turn of the loop for the claims
            assert not any(r.done() for r in rounds)

        await asyncio.wait_for(retrying(), GUARD)
        left = queue.claim_group_soon([urgent.id], ROUTE, NOW)
        await asyncio.wait_for(queue.accept([urgent]), GUARD)
        assert left.result() == [Held(NOW, ACCOUNT_BUSY)]
        assert not any(r.done() for r in rounds)
        await holder.rollback()
    got = await asyncio.wait_for(asyncio.gather(*rounds), GUARD)
    assert all(isinstance(c, ClaimedMessage) for [c] in got)


async def test_a_settle_leaves_what_a_held_row_keeps_to_the_next_settle(
    cluster: Backend, migrated_dsn: str
) -> None:
    """A settle finds the account's row held: it returns at once, owing its give-back,
    which the account's next settle here gives back (to the row and to this node's
    share) once the row is free. The rate is so low that no refill counts here."""
    queue = cluster.b
    assert isinstance(queue, ClusterQueue) and cluster.pool is not None
    takes = queue.takes
    async with cluster.pool.connection() as conn:
        await buckets.configure(conn, "acme", 0.001, 10)
        me = await register(conn, "node-c", 60.0)
        await conn.commit()
        first = await buckets.take(conn, "acme", me, 5)
        assert first.n == 5
        async with await psycopg.AsyncConnection.connect(migrated_dsn) as holder:
            await holder.execute("SELECT 1 FROM rate_accounts WHERE account = 'acme' FOR UPDATE")
            await asyncio.wait_for(takes.settle(conn, me, "acme", first, 1, 5), GUARD)
            assert takes.settles_owed == 1
        second = await buckets.take(conn, "acme", me, 1)
        assert second.n == 1
        await takes.settle(conn, me, "acme", second, 1, 1)
        cur = await conn.execute(
            "SELECT a.tokens, s.tokens FROM rate_accounts a JOIN rate_shares s USING (account)"
            " WHERE account = 'acme' AND s.incarnation = %s",
            (me.incarnation,),
        )
        row = await cur.fetchone()
    assert takes.settles_owed == 1
    assert row is not None
    tokens, share = row
    assert round(tokens) == 10 - 5 + 4 - 1  # the first settle's 4 back, late
    assert round(share) == round(first.share) - 5 + 4 - 1
