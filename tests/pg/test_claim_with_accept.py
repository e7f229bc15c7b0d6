"""S6 on PostgreSQL: at a trickle, a message is claimed in its accept's transaction
(`ClusterQueue.claim_group_soon`), so `queued` and `sending` commit together: one
commit (and fsync) instead of two, and no scheduler wake-up between them. Counted by
the transactions that wrote the rows, not timed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.cluster import buckets
from gateway.cluster.lease import Pool
from gateway.cluster.queue_store import ClusterQueue
from gateway.cluster.schema import migrate
from gateway.models import Priority
from gateway.store.claim_check import ACCOUNT_BUSY, ACCOUNT_EMPTY, Held
from gateway.store.store import ClaimedMessage
from tests.pg.test_store_contract import NOW, ROUTE, Backend, _cluster, message


@pytest.fixture
async def cluster(pg_dsn: str) -> AsyncIterator[Backend]:
    async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=4, open=False) as pool:
        async with pool.connection() as conn:
            await migrate(conn)
        yield await _cluster(pool)


class CountingPool:
    """The pool, counting the connections taken from it (each holds one transaction
    in `ClusterQueue`'s writes)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self.taken = 0

    def connection(self) -> Any:
        self.taken += 1
        return self._pool.connection()


async def test_a_claim_handed_over_before_the_accept_commits_with_it(cluster: Backend) -> None:
    assert cluster.pool is not None
    node_b = cluster.b
    assert isinstance(node_b, ClusterQueue)
    pool = CountingPool(cluster.pool)
    queue = ClusterQueue(pool, node_b.cipher, node_b._me)  # type: ignore[arg-type]
    m = message(1)
    claimed = queue.claim_group_soon([m.id], ROUTE, NOW)
    await queue.accept([m])
    assert pool.taken == 1  # the accept and its claim: one transaction, one commit
    assert claimed.done()  # settled by the accept itself: nothing else to wait for
    [got] = claimed.result()
    assert isinstance(got, ClaimedMessage)
    assert (got.id, got.to, got.body) == (m.id, m.to, m.body)
    assert await cluster.row(m.id) == ("sending", False)
    assert [e.state for e in await queue.events(m.id)] == ["queued", "sending"]
    # The next accept is on its own again.
    other = message(2)
    await queue.accept([other])
    assert await cluster.row(other.id) == ("queued", False)


async def test_a_claim_that_fails_leaves_the_accept_whole(cluster: Backend) -> None:
    queue = cluster.a
    assert isinstance(queue, ClusterQueue)
    await cluster._renode()  # A's incarnation ended in the database: it may not claim
    m = message(3)
    claimed = queue.claim_group_soon([m.id], ROUTE, NOW)
    await queue.accept([m])
    assert claimed.done() and claimed.exception() is not None
    assert await cluster.row(m.id) == ("queued", False)  # the round claims it as ever


async def test_an_accept_that_fails_fails_its_claim(cluster: Backend) -> None:
    queue = cluster.b
    assert isinstance(queue, ClusterQueue)
    m = message(4)
    await queue.accept([m])
    claimed = queue.claim_group_soon([m.id], ROUTE, NOW)
    with pytest.raises(psycopg.errors.UniqueViolation):
        await queue.accept([m])  # the same id again
    assert claimed.done() and claimed.exception() is not None
    assert await cluster.row(m.id) == ("queued", False)


async def test_an_accept_never_waits_on_its_accounts_bucket_row(
    cluster: Backend, pg_dsn: str
) -> None:
    """S6 on a carrier account the nodes share: with another session holding the
    account's bucket row (another node's take, frozen here), an accept whose claim rides
    in it commits at once, its message left to the next round (held until now, not for
    want of tokens). Before, the claim locked the row in the accept's transaction and
    the accept waited for every take ahead of it (here: forever)."""
    queue = cluster.b
    assert isinstance(queue, ClusterQueue) and cluster.pool is not None
    async with cluster.pool.connection() as conn:
        await buckets.configure(conn, "acme", 100.0, 10)
    queue.accounts[ROUTE] = "acme"
    m = message(5, priority=Priority.CRITICAL)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as holder:
        await holder.execute("SELECT 1 FROM rate_accounts WHERE account = 'acme' FOR UPDATE")
        claimed = queue.claim_group_soon([m.id], ROUTE, NOW)
        await asyncio.wait_for(queue.accept([m]), 60)  # a guard: the old code never returns
        assert claimed.result() == [Held(NOW, ACCOUNT_BUSY)]
        assert await cluster.row(m.id) == ("queued", False)
    [got] = await queue.claim_group([m.id], ROUTE, NOW)  # the round's claim, the row free
    assert isinstance(got, ClaimedMessage)


async def test_tokens_a_claim_did_not_use_go_back_to_the_account(cluster: Backend) -> None:
    """A claim takes its tokens before its transaction and gives back what it did not
    claim (here a message another claimer holds): the bucket is as if it took only
    those it claimed. The rate is so low that its refill over the test is no token."""
    queue = cluster.b
    assert isinstance(queue, ClusterQueue) and cluster.pool is not None
    async with cluster.pool.connection() as conn:
        await buckets.configure(conn, "slow", 0.001, 5)
    queue.accounts[ROUTE] = "slow"
    first, second, third = message(6), message(7), message(8)
    await queue.accept([first, second, third])
    [taken] = await queue.claim_group([third.id], ROUTE, NOW)
    assert isinstance(taken, ClaimedMessage)
    got = await queue.claim_group([first.id, second.id, third.id], ROUTE, NOW)
    assert [type(g) for g in got] == [ClaimedMessage, ClaimedMessage, type(None)]
    async with cluster.pool.connection() as conn:
        cur = await conn.execute("SELECT tokens FROM rate_accounts WHERE account = 'slow'")
        row = await cur.fetchone()
    assert row is not None and int(row[0]) == 2  # 5 - 1 - 3 + 1 given back


async def test_a_critical_message_takes_the_accounts_token_past_its_nodes_share(
    cluster: Backend,
) -> None:
    """The account's row is the cap, the node's share only fairness: with the share
    spent and the account still holding tokens, a bulk claim is held and a critical one
    takes a token (the share goes into debt). Rates so low that no refill counts."""
    queue = cluster.b
    assert isinstance(queue, ClusterQueue) and cluster.pool is not None
    async with cluster.pool.connection() as conn:
        await buckets.configure(conn, "slow", 0.001, 10)
    queue.accounts[ROUTE] = "slow"
    bulk, later, urgent = message(9), message(10), message(11, priority=Priority.CRITICAL)
    await queue.accept([bulk, later, urgent])
    [first] = await queue.claim_group([bulk.id], ROUTE, NOW)  # makes this node's share
    assert isinstance(first, ClaimedMessage)
    async with cluster.pool.connection() as conn:
        await conn.execute("UPDATE rate_shares SET tokens = 0")
    [held] = await queue.claim_group([later.id], ROUTE, NOW)
    assert isinstance(held, Held) and held.reason == ACCOUNT_EMPTY
    [got] = await queue.claim_group([urgent.id], ROUTE, NOW)
    assert isinstance(got, ClaimedMessage)
    async with cluster.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT a.tokens, s.tokens FROM rate_accounts a JOIN rate_shares s USING (account)"
        )
        row = await cur.fetchone()
    assert row is not None and (int(row[0]), round(row[1])) == (8, -1)
