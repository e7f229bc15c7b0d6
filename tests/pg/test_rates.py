"""A carrier account's rate shared by several nodes: the cap holds in every 1 s window
of the database's clock, and the nodes share it fairly."""

from __future__ import annotations

import asyncio
import bisect
from datetime import datetime

import pytest

from drivers.clock import SystemClock
from gateway.cluster import buckets
from gateway.cluster.claimer import Claimer
from gateway.cluster.claims import claim
from gateway.cluster.lease import Membership, Pool
from gateway.cluster.nodes import recover_expired, register
from tests.pg.queue_rows import add_messages, rows

RATE, BURST = 140.0, 10.0
CONTRACT = RATE + BURST  # the most any window of 1 s may see
TAKE = 200  # claims the test waits for: 1.4 s at the rate, more on a busy machine


def max_in_any_window(stamps: list[datetime], seconds: float = 1.0) -> int:
    """The most claims in any half-open window [t, t + seconds) that starts at a claim."""
    times = sorted(s.timestamp() for s in stamps)
    return max(bisect.bisect_left(times, t + seconds) - i for i, t in enumerate(times))


def jain(counts: list[int]) -> float:
    return sum(counts) ** 2 / (len(counts) * sum(c * c for c in counts))


def test_the_window_count_and_the_fairness_index() -> None:
    at = [datetime.fromtimestamp(t) for t in (0.0, 0.5, 0.99, 1.0, 1.2, 3.0)]
    assert max_in_any_window(at) == 4  # 0.5, 0.99, 1.0, 1.2
    assert jain([10, 10, 10]) == 1.0
    assert jain([30, 0, 0]) == pytest.approx(1 / 3)


async def test_three_nodes_on_one_account_never_exceed_it_and_share_it_fairly(
    pool: Pool,
) -> None:
    clock = SystemClock()
    await add_messages(pool, 3000, due_at=0.0)
    async with pool.connection() as conn:
        await buckets.configure(conn, "acct", RATE, BURST)
    members = [Membership(pool, f"n{k}", clock) for k in range(3)]
    for m in members:
        await m.start()
    enough = asyncio.Event()
    taken = 0

    async def run(member: Membership) -> None:
        nonlocal taken
        claimer = Claimer(pool, member, clock)
        while True:
            taken += len(await claimer.take("g", "smsc", 20, account="acct"))
            if taken >= TAKE:
                enough.set()

    tasks = [asyncio.create_task(run(m)) for m in members]
    try:
        await asyncio.wait_for(enough.wait(), 60)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for m in members:
            await m.stop()
    claimed = await rows(
        pool, "SELECT claimed_at, owner_node FROM messages WHERE state = 'sending'"
    )
    assert len(claimed) >= TAKE
    assert max_in_any_window([c[0] for c in claimed]) <= CONTRACT
    per_node = [sum(1 for c in claimed if c[1] == f"n{k}") for k in range(3)]
    assert jain(per_node) >= 0.95, per_node


async def test_a_claim_takes_no_more_than_the_bucket_holds(pool: Pool) -> None:
    """Deterministic half of the above: a full bucket of 10 grants 10 of 50 at once,
    then (the next token not yet due) nothing, and says when to come back."""
    await add_messages(pool, 50, due_at=0.0)
    async with pool.connection() as conn:
        await buckets.configure(conn, "slow", 0.001, 10)
        me = await register(conn, "a", 60.0)
        first = await claim(conn, me, "g", "smsc", 50, 1.0, account="slow")
        second = await claim(conn, me, "g", "smsc", 50, 1.0, account="slow")
        with pytest.raises(buckets.UnknownAccount):
            await claim(conn, me, "g", "smsc", 50, 1.0, account="nobody")
    assert len(first.claimed) == 10
    assert second.claimed == [] and second.retry_after > 100
    assert await rows(pool, "SELECT count(*) FROM messages WHERE state = 'sending'") == [(10,)]


async def test_shares_count_only_live_nodes_that_want_more(pool: Pool) -> None:
    await add_messages(pool, 100, due_at=0.0)
    async with pool.connection() as conn:
        await buckets.configure(conn, "acct", 1000.0, 2)
        a = await register(conn, "a", 60.0)
        b = await register(conn, "b", 60.0)
        async with conn.transaction():
            assert (await buckets.reserve(conn, "acct", b, 1)).nodes == 1  # a wants nothing yet
        starved = await claim(conn, a, "g", "smsc", 50, 1.0, account="acct")
        assert 0 < len(starved.claimed) < 50  # refused some: a counts in b's share now
        async with conn.transaction():
            assert (await buckets.reserve(conn, "acct", b, 1, active_window=60)).nodes == 2
        await conn.execute(
            "UPDATE nodes SET lease_until = clock_timestamp() WHERE incarnation = %s",
            (a.incarnation,),
        )
        await conn.commit()
        async with conn.transaction():  # lapsed: no longer counted, even before recovery
            assert (await buckets.reserve(conn, "acct", b, 1, active_window=60)).nodes == 1
        await recover_expired(conn, b)
    assert await rows(
        pool, "SELECT count(*) FROM rate_shares WHERE incarnation = %s", (a.incarnation,)
    ) == [(0,)]


async def test_a_node_that_stops_claiming_leaves_the_shares_within_the_active_window(
    pool: Pool,
) -> None:
    """S3's recovery: a killed node's share goes to the others one ACTIVE_WINDOW after
    its last refusal, while its lease still runs (not at the lease's end). The window's
    passing is the refusal's stamp moved back, not a wait; a window of 60 s keeps b
    counted however slow the machine."""
    await add_messages(pool, 100, due_at=0.0)
    async with pool.connection() as conn:
        await buckets.configure(conn, "acct", 1000.0, 2)
        a = await register(conn, "a", 60.0)
        b = await register(conn, "b", 60.0)
        c = await register(conn, "c", 60.0)
        for node in (a, b):  # both refused some (a burst of 2 for 50): three share it
            await claim(conn, node, "g", "smsc", 50, 1.0, account="acct")
        async with conn.transaction():
            grant = await buckets.reserve(conn, "acct", c, 1, active_window=60)
        assert grant.nodes == 3
        await conn.execute(  # a killed: its last refusal is now a window old
            "UPDATE rate_shares SET starved_at = starved_at - make_interval(secs => %s)"
            " WHERE incarnation = %s",
            (60, a.incarnation),
        )
        await conn.commit()
        async with conn.transaction():
            grant = await buckets.reserve(conn, "acct", c, 1, active_window=60)
        assert grant.nodes == 2  # b and c: c's share refills at rate / 2 from here
    assert await rows(
        pool,
        "SELECT count(*) FROM nodes WHERE incarnation = %s AND lease_until > now()",
        (a.incarnation,),
    ) == [(1,)]
