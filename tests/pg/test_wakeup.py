"""Wake-ups: a waiting claimer wakes on NOTIFY, finds work by polling when notifications
are lost, and the listener comes back after its connection is killed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from drivers.clock import FakeClock, SystemClock
from gateway.cluster.claimer import Claimer
from gateway.cluster.lease import Membership, Pool
from gateway.cluster.wakeup import CHANNEL, DEBOUNCE, Notifier, Waker
from tests.pg.queue_rows import add_messages

WAIT = 10.0  # an upper bound on waiting for an event, never an expected duration
LONG_POLL = 60.0  # longer than any WAIT: a claimer that returns was woken, not polling


@pytest.fixture
async def member(pool: Pool) -> AsyncIterator[Membership]:
    m = Membership(pool, "n1", SystemClock())
    await m.start()
    yield m
    await m.stop()


@pytest.fixture
async def waker(pg_dsn: str) -> AsyncIterator[Waker]:
    w = Waker(pg_dsn, SystemClock(), reconnect_delay=0.05)
    await w.start()
    await asyncio.wait_for(w.listening.wait(), WAIT)
    yield w
    await w.stop()


async def test_a_waiting_claimer_wakes_on_a_notified_insert(
    pool: Pool, member: Membership, waker: Waker
) -> None:
    clock = SystemClock()
    claimer = Claimer(pool, member, clock, waker, poll_interval=LONG_POLL)
    take = asyncio.create_task(claimer.take("g", "smsc", 5))
    await asyncio.wait_for(claimer.waiting.wait(), WAIT)  # the queue was empty
    await add_messages(pool, 3, due_at=0.0)  # another connection's commit
    notifier = Notifier(pool, clock)
    notifier.due("g")
    got = await asyncio.wait_for(take, WAIT)
    assert len(got) == 3
    assert claimer.claims == 2  # the empty one, then the one the notification woke


async def test_with_notifications_lost_polling_still_finds_the_work(
    pool: Pool, member: Membership
) -> None:
    claimer = Claimer(pool, member, SystemClock(), poll_interval=0.05)  # no listener at all
    take = asyncio.create_task(claimer.take("g", "smsc", 5))
    await asyncio.wait_for(claimer.waiting.wait(), WAIT)
    await add_messages(pool, 2, due_at=0.0)  # and nobody notifies
    assert len(await asyncio.wait_for(take, WAIT)) == 2


async def test_the_listener_reconnects_after_its_backend_is_killed(
    pool: Pool, member: Membership, waker: Waker, pg_dsn: str
) -> None:
    first = waker.backend_pid
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    await asyncio.wait_for(waker.listening.wait(), WAIT)
    while waker.backend_pid == first:  # listening was still set from before the kill
        waker.listening.clear()
        await asyncio.wait_for(waker.listening.wait(), WAIT)
    clock = SystemClock()
    claimer = Claimer(pool, member, clock, waker, poll_interval=LONG_POLL)
    take = asyncio.create_task(claimer.take("g", "smsc", 5))
    await asyncio.wait_for(claimer.waiting.wait(), WAIT)
    await add_messages(pool, 1, due_at=0.0)
    Notifier(pool, clock).due("g")
    assert len(await asyncio.wait_for(take, WAIT)) == 1


async def test_a_burst_of_due_work_is_one_notification_per_group(pool: Pool, pg_dsn: str) -> None:
    clock = FakeClock()
    notifier = Notifier(pool, clock)
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as listener:
        await listener.execute(f"LISTEN {CHANNEL}")
        for _ in range(100):
            notifier.due("g")
            notifier.due("h")
        await clock.wait_sleeping(1)
        clock.advance(DEBOUNCE)
        async with pool.connection() as conn:  # a marker sent after the flush, seen last
            await asyncio.wait_for(notifier.flushed.wait(), WAIT)
            await conn.execute("SELECT pg_notify(%s, 'end')", (CHANNEL,))
        payloads = []
        async for note in listener.notifies(timeout=WAIT):
            payloads.append(note.payload)
            if note.payload == "end":
                break
    assert payloads == ["g", "h", "end"]
    assert notifier.sent == 2


async def test_an_urgent_notice_goes_at_once_without_the_debounce(pool: Pool, waker: Waker) -> None:
    """S6: a critical message given up to the peers is not held back by the debounce
    meant for bursts (the clock never moves here: a debounced notice would never go)."""
    notifier = Notifier(pool, FakeClock())
    woken = asyncio.create_task(waker.wait("critical", LONG_POLL))
    notifier.due("critical", urgent=True)
    assert await asyncio.wait_for(woken, WAIT)
    # the NOTIFY can reach the listener before the flush counts it (the pool takes its
    # connection back in between); a debounced notice would never flush at all
    await asyncio.wait_for(notifier.flushed.wait(), WAIT)
    assert notifier.sent == 1
    await notifier.aclose()
