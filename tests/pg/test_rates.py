"""A carrier account's rate shared by several nodes: the cap holds in every 1 s window
of the database's clock, and the nodes share it fairly."""

from __future__ import annotations

import asyncio
import bisect
import math
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


def test_max_min_shares() -> None:
    """A node wanting more gets an equal part of what those wanting less leave."""
    inf = math.inf
    assert buckets.fair_share(100, []) == 100
    assert buckets.fair_share(100, [10]) == 90  # B beside A wanting 10 of 100
    assert buckets.fair_share(100, [inf]) == 50  # A beside B wanting everything
    assert buckets.fair_share(100, [inf, inf]) == pytest.approx(100 / 3)
    assert buckets.fair_share(100, [10, inf]) == 45
    assert buckets.fair_share(100, [60]) == 50  # more than an equal part: equal parts
    assert buckets.fair_share(100, [0, 0, 30]) == 70


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
    its last claim, while its lease still runs (not at the lease's end). The window's
    passing is the claim's stamp moved back, not a wait; a window of 60 s keeps b
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
        assert grant.share_rate == pytest.approx(1000 / 3)  # a and b want more: equal parts
        await conn.execute(  # a killed: its last claim is now a window old
            "UPDATE rate_shares SET stamp = stamp - make_interval(secs => %s)"
            " WHERE incarnation = %s",
            (60, a.incarnation),
        )
        await conn.commit()
        async with conn.transaction():
            grant = await buckets.reserve(conn, "acct", c, 1, active_window=60)
        assert grant.nodes == 2  # b and c: c's share refills at rate / 2 from here
        assert grant.share_rate == pytest.approx(500)
    assert await rows(
        pool,
        "SELECT count(*) FROM nodes WHERE incarnation = %s AND lease_until > now()",
        (a.incarnation,),
    ) == [(1,)]


async def test_a_stated_demand_under_an_equal_part_leaves_the_rest_to_the_other(
    pool: Pool,
) -> None:
    """Max-min from reported demand (deterministic half): A says it wants 10/s of 100/s;
    B, refused by its share, wants more: B's share refills at 90/s, A's at 50/s (an
    upper bound A does not use)."""
    await add_messages(pool, 200, group="ga", due_at=0.0, prefix="a")
    await add_messages(pool, 200, group="gb", due_at=0.0, prefix="b")
    async with pool.connection() as conn:
        await buckets.configure(conn, "acct", 100.0, 10)
        a = await register(conn, "a", 60.0)
        b = await register(conn, "b", 60.0)
        await claim(conn, a, "ga", "smsc", 1, 1.0, account="acct", demand=10.0)
        async with conn.transaction():
            grant = await buckets.reserve(conn, "acct", b, 50, active_window=60)
        assert (grant.nodes, grant.share_rate) == (2, 90.0)
        await claim(conn, b, "gb", "smsc", 50, 1.0, account="acct")  # cut short: > 90
        async with conn.transaction():
            grant = await buckets.reserve(conn, "acct", a, 1, active_window=60)
        assert (grant.nodes, grant.share_rate) == (2, 50.0)
    assert await rows(pool, "SELECT demand FROM rate_shares ORDER BY incarnation") == [
        (10.0,),
        (None,),
    ]


async def test_a_light_node_leaves_a_busy_one_what_it_does_not_use(pool: Pool) -> None:
    """Unequal demand end to end, cap 100/s: A's messages fall due at 10 a second (its
    demand, measured by the buckets from what it asks for), B has a backlog. B's share
    counts A's measured demand, not an equal half: B's share refills at >= 80/s on
    average (90 give or take A's measuring noise; 50 if A counted as wanting more), and
    no 1 s window of the account passes rate + burst. Waited for B's claims, not
    timed."""
    clock = SystemClock()
    start = clock.time()
    ids = [f"a-{i:04d}" for i in range(100)]
    async with pool.connection() as conn:
        await buckets.configure(conn, "acct", 100.0, 10)
        await conn.execute(  # A's arrivals: one due every 0.1 s from now
            "INSERT INTO messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
            " encoding, segments, created_at, updated_at, due_at, expires_at)"
            " SELECT i, 2, 'queued', 'ga', '\\x01', '\\x02', '\\x03', 'gsm7', 1, %s, %s,"
            " %s + 0.1 * n, %s FROM unnest(%s::text[]) WITH ORDINALITY AS t(i, n)",
            (start, start, start, start + 3600, ids),
        )
    await add_messages(pool, 1000, group="gb", due_at=0.0, prefix="b")
    a, b = Membership(pool, "a", clock), Membership(pool, "b", clock)
    for m in (a, b):
        await m.start()
    shares: list[float] = []  # B's share's refill rate at each of its claims
    enough = asyncio.Event()

    async def run(member: Membership, group: str, poll: float) -> None:
        claimer = Claimer(pool, member, clock, poll_interval=poll)
        while True:
            await claimer.take(group, "smsc", 10, account="acct")
            if member is b:
                shares.extend(
                    r[0]
                    for r in await rows(
                        pool,
                        "SELECT share FROM rate_shares WHERE incarnation = %s",
                        (b.me.incarnation,),
                    )
                )
                if len(shares) >= B_CLAIMS:
                    enough.set()

    tasks = [asyncio.create_task(run(a, "ga", 0.05)), asyncio.create_task(run(b, "gb", 1.0))]
    try:
        await asyncio.wait_for(enough.wait(), 60)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for m in (a, b):
            await m.stop()
    claimed = await rows(
        pool, "SELECT claimed_at, route_group FROM messages WHERE state = 'sending'"
    )
    assert max_in_any_window([c[0] for c in claimed]) <= 110
    assert any(c[1] == "ga" for c in claimed)
    late = shares[B_CLAIMS // 2 :]  # after A's average settled
    assert sum(late) / len(late) >= 80, shares
    # A reports about what falls due (not "more than it gets", even when B had just
    # emptied the account's row as A claimed), so it is counted under an equal part.
    ((demand,),) = await rows(
        pool, "SELECT demand FROM rate_shares WHERE incarnation = %s", (a.me.incarnation,)
    )
    assert demand is not None and demand < 50


B_CLAIMS = 30
