"""S6 on a carrier account the nodes share: the bottom tokens of the account's bucket
are for critical messages (`gateway/cluster/bucket_reserve.py`). Bulk never draws them,
a critical take does at once although another node's bulk took every other token, and
the account's cap holds in every 1 s window whatever the mix of takes (S2)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.cluster import buckets
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation, register
from gateway.cluster.queue_store import ClusterQueue
from gateway.models import Priority
from gateway.store.claim_check import ACCOUNT_BUSY, ACCOUNT_EMPTY, Held
from gateway.store.store import ClaimedMessage
from tests.pg.test_rates import jain, max_in_any_window
from tests.pg.test_store_contract import NOW, ROUTE, Backend, _cluster, message

RATE, BURST, RESERVE = 100.0, 10.0, 3.0
TAKEN = 150  # tokens the interleaved takes run for: 1.4 s of the rate after the burst


@pytest.fixture
async def cluster(migrated_dsn: str) -> AsyncIterator[Backend]:
    async with AsyncConnectionPool(migrated_dsn, min_size=1, max_size=4, open=False) as pool:
        yield await _cluster(pool)


async def test_a_critical_message_draws_the_reserve_another_nodes_bulk_left(
    cluster: Backend,
) -> None:
    """Node A's bulk takes every token it may: all but the reserve. Node B's bulk claim
    is then held, and its critical messages are claimed at once, as many as the reserve
    holds. Before, A's bulk took the reserve too and B's critical waited for the next
    token, behind A's next bulk take. The rate is so low that no refill counts here."""
    other, queue = cluster.a, cluster.b
    assert isinstance(other, ClusterQueue) and isinstance(queue, ClusterQueue)
    assert cluster.pool is not None
    async with cluster.pool.connection() as conn:
        await buckets.configure(conn, "acme", 0.001, 10, reserve=2)
    other.accounts[ROUTE] = queue.accounts[ROUTE] = "acme"
    bulk = [message(20 + i) for i in range(11)]
    urgent = [message(40 + i, priority=Priority.CRITICAL) for i in range(3)]
    await queue.accept([*bulk, *urgent])
    got = await other.claim_group([m.id for m in bulk[:10]], ROUTE, NOW)
    assert [type(g) for g in got] == [ClaimedMessage] * 8 + [Held] * 2
    [held] = await queue.claim_group([bulk[10].id], ROUTE, NOW)
    assert isinstance(held, Held) and held.reason == ACCOUNT_EMPTY
    [first] = await queue.claim_group([urgent[0].id], ROUTE, NOW)
    assert isinstance(first, ClaimedMessage)
    second, third = await queue.claim_group([urgent[1].id, urgent[2].id], ROUTE, NOW)
    assert isinstance(second, ClaimedMessage)  # the reserve's last token
    assert isinstance(third, Held) and third.reason == ACCOUNT_EMPTY  # spent: the cap
    async with cluster.pool.connection() as conn:
        cur = await conn.execute("SELECT tokens FROM rate_accounts WHERE account = 'acme'")
        row = await cur.fetchone()
    assert row is not None and int(row[0]) == 0


async def test_a_critical_accept_waits_for_the_accounts_row_a_bulk_one_does_not(
    cluster: Backend, migrated_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another node's take holds the account's row: a bulk message's accept leaves it to
    the next round at once (NOWAIT); a critical one's waits for the row (at most
    `CRITICAL_LOCK_WAIT`, here longer than the test) and is claimed in its accept as
    soon as the row is free, instead of waiting for a round (S6 on a shared account)."""
    monkeypatch.setattr(buckets, "CRITICAL_LOCK_WAIT", 60.0)
    queue = cluster.b
    assert isinstance(queue, ClusterQueue) and cluster.pool is not None
    async with cluster.pool.connection() as conn:
        await buckets.configure(conn, "acme", 100.0, 10, reserve=2)
    queue.accounts[ROUTE] = "acme"
    bulk, urgent = message(60), message(61, priority=Priority.CRITICAL)
    async with (
        await psycopg.AsyncConnection.connect(migrated_dsn) as holder,  # the cluster's
        await psycopg.AsyncConnection.connect(migrated_dsn, autocommit=True) as watcher,
    ):
        await holder.execute("SELECT 1 FROM rate_accounts WHERE account = 'acme' FOR UPDATE")
        left = queue.claim_group_soon([bulk.id], ROUTE, NOW)
        await asyncio.wait_for(queue.accept([bulk]), 60)
        assert left.result() == [Held(NOW, ACCOUNT_BUSY)]
        claimed = queue.claim_group_soon([urgent.id], ROUTE, NOW)
        accept = asyncio.create_task(queue.accept([urgent]))

        async def waiting() -> None:
            while not await (
                await watcher.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%%rate_take_reserved%%'"
                )
            ).fetchone():
                assert not accept.done()

        await asyncio.wait_for(waiting(), 60)
        await holder.rollback()
        await asyncio.wait_for(accept, 60)
    [got] = claimed.result()
    assert isinstance(got, ClaimedMessage)


def test_a_critical_takes_wait_is_the_accounts_alone_a_bulk_ones_above_the_reserve() -> None:
    """When to come back: a critical take is not bound by its node's share (in debt
    after criticals past it), so only the account's next token counts; a bulk take
    waits for a token above the reserve."""
    at = datetime.now(UTC)
    critical = buckets.Grant(0, at, 0.5, -4.0, 100.0, 10.0, 2, 50.0, 0.0, True)
    assert buckets.retry_after(critical, 0) == pytest.approx(0.005)
    bulk = buckets.Grant(0, at, 2.5, 5.0, 100.0, 10.0, 2, 50.0, 2.0, False)
    assert buckets.retry_after(bulk, 0) == pytest.approx(0.005)  # 3 tokens: 0.5 to go
    assert buckets.retry_after(bulk, 0) < buckets.retry_after(
        buckets.Grant(0, at, 2.5, -1.0, 100.0, 10.0, 2, 50.0, 2.0, False), 0
    )  # a bulk take's share counts


async def test_interleaved_takes_keep_the_cap_and_bulk_never_draws_the_reserve(
    pool: Pool,
) -> None:
    """Three nodes' takes, bulk and critical mixed, at random sizes, straight on the SQL
    function (`rate_take_reserved`) from three sessions at once, until TAKEN tokens are
    out: every 1 s window of the database's clock holds at most rate + burst tokens;
    no bulk take goes below the reserve; a critical take gets a token whenever the
    account holds one; bulk shares fairly between the nodes."""
    async with pool.connection() as conn:
        await buckets.configure(conn, "acct", RATE, BURST, RESERVE)
        nodes = [await register(conn, f"n{k}", 60.0) for k in range(3)]
    takes: list[tuple[Incarnation, bool, int, Any]] = []  # (node, critical, want, row)
    enough = asyncio.Event()
    rng = random.Random(18)

    async def run(me: Incarnation) -> None:
        async with pool.connection() as conn:
            await conn.set_autocommit(True)
            while not enough.is_set():
                # Criticals a trickle (about a tenth of the tokens), as on a real account:
                # taken as fast as the loops go they would leave bulk nothing, by design.
                out = sum(t[3][0] for t in takes)
                urgent = sum(t[3][0] for t in takes if t[1])
                critical = urgent * 10 <= out and rng.random() < 0.5
                want = 1 if critical else rng.randint(1, 4)
                cur = await conn.execute(
                    "SELECT * FROM rate_take_reserved(%s, %s, %s, 1.0, NULL, true, NULL, %s)",
                    ("acct", me.incarnation, want, critical),
                )
                row = await cur.fetchone()
                takes.append((me, critical, want, row))
                if sum(t[3][0] for t in takes) >= TAKEN:
                    enough.set()

    await asyncio.wait_for(asyncio.gather(*(run(me) for me in nodes)), 60)
    stamps = [row[1] for _, _, _, row in takes for _ in range(row[0])]
    assert max_in_any_window(stamps) <= RATE + BURST
    for _, critical, want, row in takes:
        n, tokens, floor = row[0], row[2], row[8]
        assert row[9] is critical and tokens - n >= 0
        if critical:
            assert floor == 0 and n == min(want, int(tokens))
        else:
            assert floor == RESERVE and (n == 0 or tokens - n >= RESERVE)
    assert any(row[0] for _, critical, _, row in takes if critical)
    assert any(row[0] == 0 for _, critical, _, row in takes if not critical)  # it ran dry
    bulk = [sum(row[0] for me, c, _, row in takes if me == node and not c) for node in nodes]
    assert jain(bulk) >= 0.95, bulk
