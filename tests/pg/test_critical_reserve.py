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

import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.cluster import buckets
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation, register
from gateway.cluster.queue_store import ClusterQueue
from gateway.models import Priority
from gateway.store.claim_check import ACCOUNT_EMPTY, Held
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
                    "SELECT * FROM rate_take_reserved(%s, %s, %s, 1.0, false, true, NULL, %s)",
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
