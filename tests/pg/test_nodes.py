"""Nodes, incarnations, guarded finishes and the recovery of a dead node's claims."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from gateway.cluster import nodes
from gateway.cluster.claims import claim
from gateway.cluster.lease import Pool
from gateway.cluster.nodes import Incarnation, Recovered
from gateway.cluster.outcomes import Outcome, finish
from gateway.lifecycle import IllegalTransition
from gateway.models import State
from tests.pg.queue_rows import NOW, add_messages, rows


async def register(pool: Pool, name: str, lease: float = 60.0) -> Incarnation:
    async with pool.connection() as conn:
        return await nodes.register(conn, name, lease)


async def end_lease(pool: Pool, me: Incarnation) -> None:
    """The lease lapses (as if the node stopped renewing): ended now, in DB time."""
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE nodes SET lease_until = clock_timestamp() WHERE incarnation = %s",
            (me.incarnation,),
        )


async def test_each_start_is_a_new_incarnation_that_supersedes_the_last(pool: Pool) -> None:
    first = await register(pool, "site-a-gw1")
    second = await register(pool, "site-a-gw1")
    other = await register(pool, "site-b-gw1")
    assert first.incarnation < second.incarnation < other.incarnation
    async with pool.connection() as conn:
        assert not await nodes.renew(conn, first, 10.0)  # superseded: never revived
        assert await nodes.renew(conn, second, 10.0)
        assert await nodes.renew(conn, other, 10.0)


async def test_a_lapsed_lease_is_not_renewed(pool: Pool) -> None:
    me = await register(pool, "a")
    await end_lease(pool, me)
    async with pool.connection() as conn:
        assert not await nodes.renew(conn, me, 10.0)


async def test_outcomes_apply_while_the_claim_holds(pool: Pool) -> None:
    me = await register(pool, "a")
    await add_messages(pool, 3)
    async with pool.connection() as conn:
        claimed = (await claim(conn, me, "g", "smsc", 3, NOW)).claimed
        sent, retry, failed = claimed
        done = await finish(
            conn,
            me,
            [
                Outcome(sent.id, sent.epoch, State.SENT, "smsc", carrier_ids=("c1", "c2")),
                Outcome(
                    retry.id,
                    retry.epoch,
                    State.QUEUED,
                    "smsc",
                    error_code="smpp:0x58",
                    due_at=NOW + 30,
                    attempts=0,
                    possible_duplicate=True,
                ),
                Outcome(failed.id, failed.epoch, State.FAILED, "smsc", error_code="smpp:0x0b"),
            ],
            NOW + 1,
        )
        with pytest.raises(IllegalTransition):
            await finish(conn, me, [Outcome(sent.id, sent.epoch, State.DELIVERED, "smsc")], NOW)
    assert done.applied == [sent.id, retry.id, failed.id] and done.late == []
    got = await rows(
        pool,
        "SELECT id, state, due_at, attempts, possible_duplicate, owner_incarnation"
        " FROM messages ORDER BY id",
    )
    assert got == [
        (sent.id, "sent", NOW - 10, 1, False, me.incarnation),
        (retry.id, "queued", NOW + 30, 0, True, None),
        (failed.id, "failed", NOW - 10, 1, False, me.incarnation),
    ]
    assert await rows(pool, "SELECT carrier_id, message_id, part FROM carrier_ids ORDER BY 1") == [
        ("c1", sent.id, 0),
        ("c2", sent.id, 1),
    ]
    assert await rows(pool, "SELECT count(*) FROM late_outcomes") == [(0,)]


async def test_a_finish_that_lost_its_claim_is_a_late_outcome_and_overwrites_nothing(
    pool: Pool,
) -> None:
    a = await register(pool, "a")
    b = await register(pool, "b")
    await add_messages(pool, 2)
    async with pool.connection() as conn:
        first, second = (await claim(conn, a, "g", "smsc", 2, NOW)).claimed
        await end_lease(pool, a)  # a stalls past its lease
        assert await nodes.recover_expired(conn, b) == [Recovered(a.incarnation, "a", 2)]
        # b claims the first again (a new epoch); the second is still queued
        (again,) = (await claim(conn, b, "g", "smsc", 1, NOW)).claimed
        assert again.id == first.id and again.epoch == first.epoch + 2  # recovery, claim
        late = await finish(
            conn,
            a,
            [
                Outcome(first.id, first.epoch, State.SENT, "smsc", carrier_ids=("old-1",)),
                Outcome(second.id, second.epoch, State.FAILED, "smsc", error_code="x"),
            ],
            NOW,
        )
        mine = await finish(
            conn,
            b,
            [Outcome(again.id, again.epoch, State.SENT, "smsc", carrier_ids=("new-1",))],
            NOW,
        )
    assert late.applied == [] and sorted(late.late) == sorted([first.id, second.id])
    assert mine.applied == [again.id]
    assert await rows(pool, "SELECT id, state, possible_duplicate FROM messages ORDER BY id") == [
        (first.id, "sent", True),
        (second.id, "queued", True),
    ]
    assert await rows(
        pool, "SELECT message_id, incarnation, state, carrier_ids FROM late_outcomes ORDER BY 1"
    ) == [
        (first.id, a.incarnation, "sent", ["old-1"]),
        (second.id, a.incarnation, "failed", []),
    ]
    assert await rows(pool, "SELECT carrier_id FROM carrier_ids") == [("new-1",)]


async def test_a_dead_nodes_sending_rows_are_requeued_exactly_once_by_racing_sweepers(
    pool: Pool,
) -> None:
    """Six sweepers of three live nodes notice one dead node at once: its 300 `sending`
    rows go back to `queued` once each, flagged, with one event each; one sweeper
    reports it; a live node's claims are left alone."""
    dead = await register(pool, "dead")
    alive = await register(pool, "alive")
    await add_messages(pool, 300, prefix="d")
    await add_messages(pool, 20, prefix="z")
    async with pool.connection() as conn:
        taken = (await claim(conn, dead, "g", "smsc", 300, NOW)).claimed
        kept = (await claim(conn, alive, "g", "smsc", 20, NOW)).claimed
    assert {c.id[0] for c in taken} == {"d"} and len(kept) == 20
    sweepers = [alive, await register(pool, "s2"), await register(pool, "s3")]
    await end_lease(pool, dead)
    start = asyncio.Event()

    async def sweep(me: Incarnation) -> list[Recovered]:
        async with pool.connection() as conn:
            await start.wait()
            return await nodes.recover_expired(conn, me)

    tasks = [asyncio.create_task(sweep(sweepers[k % 3])) for k in range(6)]
    start.set()
    reports = [r for found in await asyncio.gather(*tasks) for r in found]
    assert reports == [Recovered(dead.incarnation, "dead", 300)]
    states = await rows(
        pool,
        "SELECT state, possible_duplicate, claim_epoch, owner_incarnation, count(*)"
        " FROM messages GROUP BY 1, 2, 3, 4 ORDER BY 1",
    )
    assert states == [("queued", True, 2, None, 300), ("sending", False, 1, alive.incarnation, 20)]
    requeues = await rows(
        pool, "SELECT message_id FROM message_events WHERE error_code = 'cluster:lease_expired'"
    )
    assert Counter(Counter(r[0] for r in requeues).values()) == {1: 300}
    async with pool.connection() as conn:  # nothing left to take back
        assert await nodes.recover_expired(conn, alive) == []


async def test_a_claim_and_the_recovery_of_its_node_never_interleave(pool: Pool) -> None:
    """A claim that began while its lease ran holds the node row: a sweep skips the node
    until the claim commits, and takes its rows back on the next pass."""
    a = await register(pool, "a")
    b = await register(pool, "b")
    await add_messages(pool, 5)
    async with pool.connection() as claim_conn, pool.connection() as sweep_conn:
        async with claim_conn.transaction():
            await nodes.lock_live(claim_conn, a)
            await end_lease(pool, a)
            assert await nodes.recover_expired(sweep_conn, b) == []  # a's row is held
            await claim_conn.execute(
                "UPDATE messages SET state = 'sending', owner_node = 'a',"
                " owner_incarnation = %s, claim_epoch = 1",
                (a.incarnation,),
            )
        assert await nodes.recover_expired(sweep_conn, b) == [Recovered(a.incarnation, "a", 5)]
