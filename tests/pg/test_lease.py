"""Heartbeats, self-fencing before the lease lapses, and rejoining under a new incarnation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from drivers.clock import FakeClock, SystemClock
from gateway.cluster.claimer import Claimer
from gateway.cluster.lease import Fence, Fenced, Membership, Pool
from gateway.cluster.nodes import Recovered
from gateway.cluster.outcomes import Outcome, finish
from gateway.models import State
from tests.pg.cut_proxy import CutProxy
from tests.pg.queue_rows import add_messages, rows

WAIT = 20.0  # an upper bound on waiting for an event, never an expected duration


def test_the_fence_closes_a_margin_before_the_lease_would_end() -> None:
    clock = FakeClock()
    fence = Fence(clock, lease=10.0, margin=3.0)
    assert not fence.live  # not yet registered
    sent = clock.monotonic()
    clock.advance(0.5)  # the renewal's round trip
    fence.renewed(sent)
    clock.advance(6.4)  # 6.9 s after the renewal was sent: still live
    fence.check()
    clock.advance(0.1)  # 7 s = lease - margin after it was sent
    with pytest.raises(Fenced):
        fence.check()
    fence.renewed(clock.monotonic() - 8)  # an older renewal answered late changes nothing
    assert not fence.live
    with pytest.raises(ValueError, match="margin"):
        Fence(clock, lease=2.0, margin=2.0)


@pytest.fixture
async def proxy(pg_dsn: str) -> AsyncIterator[CutProxy]:
    p = CutProxy(int(conninfo_to_dict(pg_dsn)["port"]))  # type: ignore[arg-type]
    await p.start()
    yield p
    await p.stop()


async def test_a_partitioned_node_fences_itself_before_its_lease_lapses_then_rejoins(
    pool: Pool, pg_dsn: str, proxy: CutProxy
) -> None:
    clock = SystemClock()
    through_proxy = make_conninfo(pg_dsn, port=proxy.port, connect_timeout=2)
    recovered: asyncio.Queue[list[Recovered]] = asyncio.Queue()
    timing = {"lease": 2.5, "margin": 1.2, "interval": 0.25}
    async with AsyncConnectionPool(through_proxy, min_size=1, max_size=4, open=False) as pool_a:
        unreachable: list[str] = []  # the node's requests answer 503 at once from here
        a = Membership(pool_a, "site-a", clock, on_unreachable=unreachable.append, **timing)
        b = Membership(pool, "site-b", clock, on_recovered=recovered.put_nowait, **timing)
        await a.start()
        await b.start()
        try:
            await add_messages(pool, 4, due_at=0.0)
            claimed = await Claimer(pool_a, a, clock).take("g", "smsc", 4)
            old = a.me

            proxy.cut()
            await asyncio.wait_for(a.fenced.wait(), WAIT)
            # Fenced while the database still counts its lease: nobody has its rows yet.
            lease_left = await rows(
                pool,
                "SELECT lease_until > clock_timestamp() FROM nodes WHERE incarnation = %s",
                (old.incarnation,),
            )
            assert lease_left == [(True,)]
            assert unreachable  # told before it fenced itself: its renewals failed
            with pytest.raises(Fenced):
                await Claimer(pool_a, a, clock).take("g", "smsc", 1)

            # Once it has lapsed, the peer takes its claims back, flagged.
            assert await asyncio.wait_for(recovered.get(), WAIT) == [
                Recovered(old.incarnation, "site-a", 4)
            ]
            assert (
                await rows(pool, "SELECT state, possible_duplicate FROM messages")
                == [("queued", True)] * 4
            )

            # Healed: its renewal is refused, it rejoins under a new incarnation; what it
            # reports for its old claims is kept as late outcomes only.
            proxy.heal()
            await asyncio.wait_for(
                a.wait_until(lambda: a.fence.live and a.me.incarnation != old.incarnation), WAIT
            )
            assert not a.fenced.is_set()
            async with pool_a.connection() as conn:
                done = await finish(
                    conn,
                    old,
                    [
                        Outcome(c.id, c.epoch, State.SENT, "smsc", carrier_ids=("x",))
                        for c in claimed
                    ],
                    0.0,
                )
            assert done.applied == [] and len(done.late) == 4
            assert await rows(pool, "SELECT DISTINCT state FROM messages") == [("queued",)]
        finally:
            await a.stop(release=False)
            await b.stop()


async def test_a_clean_stop_releases_the_lease_for_the_next_sweep(pool: Pool) -> None:
    clock = SystemClock()
    recovered: asyncio.Queue[list[Recovered]] = asyncio.Queue()
    a = Membership(pool, "a", clock, lease=5.0, margin=1.0, interval=0.2)
    b = Membership(
        pool, "b", clock, lease=5.0, margin=1.0, interval=0.2, on_recovered=recovered.put_nowait
    )
    await a.start()
    await b.start()
    try:
        await add_messages(pool, 2, due_at=0.0)
        await Claimer(pool, a, clock).take("g", "smsc", 2)
        incarnation = a.me.incarnation
        await a.stop()
        with pytest.raises(Fenced):
            a.fence.check()
        assert await asyncio.wait_for(recovered.get(), WAIT) == [Recovered(incarnation, "a", 2)]
    finally:
        await b.stop()
