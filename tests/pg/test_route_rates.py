"""Issue 18 point 4 wired: a route's claims debit its carrier account's shared bucket,
and a throttle lowers the account's shared rate for every node (once per overload)."""

from __future__ import annotations

from gateway.cluster import buckets, nodes
from gateway.cluster.lease import Pool
from gateway.cluster.queue_store import ClusterQueue
from gateway.cluster.shared_rate import SharedRate
from gateway.store.claim_check import Held
from gateway.store.store import ClaimedMessage
from tests.pg.queue_rows import rows
from tests.pg.test_store_contract import NOW, ROUTE, cipher, message


async def queues(pool: Pool) -> tuple[ClusterQueue, ClusterQueue]:
    shared = cipher()
    made = []
    for name in ("gw1", "gw2"):
        async with pool.connection() as conn:
            me = await nodes.register(conn, name, 60.0)
        q = ClusterQueue(pool, shared, lambda me=me: me)
        q.accounts[ROUTE] = "acme"
        made.append(q)
    async with pool.connection() as conn:
        await buckets.configure(conn, "acme", 0.5, 2)  # two now, then one every 2 s
    return made[0], made[1]


async def test_claims_for_a_route_take_only_the_accounts_tokens(pool: Pool) -> None:
    a, b = await queues(pool)
    ms = [message(i, to=f"+1555{i:07d}") for i in range(6)]
    await a.accept(ms)
    ids = [m.id for m in ms]
    got = await a.claim_group(ids, ROUTE, NOW)
    claimed = [g for g in got if isinstance(g, ClaimedMessage)]
    held = [g for g in got if isinstance(g, Held)]
    assert [c.id for c in claimed] == ids[:2]  # the first two, in the group's order
    assert len(held) == 4 and all(NOW < h.until <= NOW + 2.5 for h in held)
    # The other node's claim finds the bucket empty: nothing leaves, all wait.
    again = await b.claim_group(ids[2:], ROUTE, NOW)
    assert all(isinstance(g, Held) for g in again)
    (state,) = await rows(pool, "SELECT state FROM messages WHERE id = %s", (ids[2],))
    assert state == ("queued",)
    assert await rows(pool, "SELECT count(*) FROM messages WHERE state = 'sending'") == [(2,)]
    (tokens,) = await rows(pool, "SELECT tokens FROM rate_accounts WHERE account = 'acme'")
    assert tokens[0] < 1
    # A route with no account claims as before.
    a.accounts.clear()
    free = await a.claim_group(ids[2:], ROUTE, NOW)
    assert all(isinstance(g, ClaimedMessage) for g in free)


async def test_a_throttle_lowers_the_shared_rate_once_per_overload_for_every_node(
    pool: Pool,
) -> None:
    a, b = await queues(pool)
    async with pool.connection() as conn:
        await buckets.configure(conn, "acme", 100, 1)
    on_a, on_b = SharedRate(pool, a, "acme"), SharedRate(pool, b, "acme")
    for t in range(40):  # 40 accepted on a over the last second
        on_a.accepted(1000.0 + t / 50)
    await on_a.aclose()
    on_a.throttled(1000.8)
    await on_a.aclose()
    ((rate, contract),) = await rows(pool, "SELECT rate, contract FROM rate_accounts")
    assert contract == 100 and rate < 100 and on_a.rate == rate
    # The same overload seen by the other node: no second cut.
    on_b.throttled(5000.0)
    await on_b.aclose()
    assert await rows(pool, "SELECT rate FROM rate_accounts") == [(rate,)]
    # A restart with the same contract keeps the lowered rate; a new contract resets it.
    async with pool.connection() as conn:
        await buckets.configure(conn, "acme", 100, 1)
        assert await rows(pool, "SELECT rate FROM rate_accounts") == [(rate,)]
        await buckets.configure(conn, "acme", 80, 1)
    assert await rows(pool, "SELECT rate, contract FROM rate_accounts") == [(80.0, 80.0)]


async def test_the_shared_rate_is_probed_back_up_while_claims_want_more(pool: Pool) -> None:
    a, _ = await queues(pool)
    async with pool.connection() as conn:
        await buckets.configure(conn, "acme", 100, 1)
        await conn.execute(
            "UPDATE rate_accounts SET rate = 50, cut_at = clock_timestamp() - interval '5 s'"
        )
    shared = SharedRate(pool, a, "acme")
    shared.accepted(10.0)  # claims got all they wanted: nothing to learn
    await shared.aclose()
    assert await rows(pool, "SELECT rate FROM rate_accounts") == [(50.0,)]
    a.starved["acme"] = 1  # a claim was short of tokens since
    shared.accepted(11.5)
    await shared.aclose()
    ((rate,),) = await rows(pool, "SELECT rate FROM rate_accounts")
    assert 50 < rate <= 100
    a.starved["acme"] = 2
    shared.accepted(11.6)  # within the window: one probe a window
    await shared.aclose()
    assert await rows(pool, "SELECT rate FROM rate_accounts") == [(rate,)]
