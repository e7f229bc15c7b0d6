"""S6 (issue 18 pt 8): a critical message behind a bulk backlog waits for no bulk claim or
bulk group. It is claimed at once past the route's claims made ahead (its own lane),
and takes the carrier window's next free slot before every bulk group claimed before
it (`window_turns.py`); the carrier's window and the rate still hold. Counted, not timed:
what was claimed, and the order the carrier saw."""

from __future__ import annotations

import asyncio
import itertools

from drivers.base import OutboundSms, SubmitResult
from drivers.clock import FakeClock
from gateway.ratelimit import TokenBucket
from gateway.scheduler import CRITICAL_AHEAD_S
from gateway.window_turns import WindowTurns
from tests.conftest import GatewayFactory, accept, loopback, state_of

WAIT = 10.0  # an upper bound on waiting for an event, never an expected duration
NO_RECEIPTS = {"expires_after": 3600, "max_attempts": 3, "want_receipt": False, "min_share": 0}


async def _until_waiting(turns: WindowTurns, ticket_class: int) -> None:
    """Until a group of `ticket_class` waits for the turn."""
    while not any(p == ticket_class for p, _ in turns.waiting()):
        turns.queued.clear()
        await asyncio.wait_for(turns.queued.wait(), WAIT)


async def test_a_critical_is_claimed_past_the_bulk_claimed_ahead_and_sent_next(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(
        [{"name": "main", "type": "loopback", "latency": 1.0, "window": 2, "claim_ahead": 4}],
        queue={"classes": dict.fromkeys(("critical", "bulk"), NO_RECEIPTS)},
    )
    order: list[str] = []
    critical_sent = asyncio.Event()
    driver = loopback(gw)
    original = driver.submit

    async def recording_submit(sms: OutboundSms) -> SubmitResult:
        order.append(sms.parts[0])
        if sms.parts[0] == "critical":
            critical_sent.set()
        return await original(sms)

    driver.submit = recording_submit  # type: ignore[method-assign]
    for i in range(10):
        await accept(gw, body=f"bulk{i}", priority="bulk")
    scheduler, route = gw.scheduler, gw.routes["main"]
    await scheduler._round()
    assert route.dispatched == 6  # two at the carrier, four claimed ahead, four queued
    await clock.wait_sleeping(2)  # the two at the carrier
    turns = scheduler.sender.turns("main")
    await _until_waiting(turns, 3)  # the claimed bulk groups wait for a slot

    await accept(gw, body="critical", priority="critical")
    await scheduler._round()
    # Claimed now, past the claims ahead (before: it waited for a bulk answer first).
    assert route.dispatched == 7
    await _until_waiting(turns, 0)
    assert turns.waiting()[0][0] == 0  # first in line, ahead of the bulk claimed before it

    clock.advance(1.0)  # the carrier answers the first two: two slots free
    await asyncio.wait_for(critical_sent.wait(), WAIT)
    await clock.wait_sleeping(2)  # the critical and the first bulk of the next group
    assert order == ["bulk0", "bulk1", "critical", "bulk2"]
    assert turns.passed == 1  # the bulk group holding the turn gave it up once
    assert route.in_flight == 2  # the carrier's window held


async def test_the_lane_is_one_window_wide_and_only_past_other_classes(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(
        [{"name": "main", "type": "loopback", "latency": 1.0, "window": 2, "claim_ahead": 4}]
    )
    route = gw.routes["main"]
    now = clock.monotonic()
    route.dispatched = route.dispatch_limit  # bulk
    assert not route.take(now)
    assert route.take(now, critical=True, lane=True)
    assert route.critical_dispatched == 1
    route.dispatched = route.dispatch_limit + route.config.window
    assert not route.take(now, critical=True, lane=True)  # one window wide
    # Criticals filling the claims ahead have no lane: they are the queue it passes.
    route.dispatched = route.critical_dispatched = route.dispatch_limit
    assert not route.take(now, critical=True, lane=True)
    route.dispatched = route.critical_dispatched = 0


async def test_window_turns_serve_the_most_urgent_class_then_arrival() -> None:
    turns = WindowTurns()
    holder = turns.ticket(3)
    await turns.acquire(holder)
    got: list[str] = []

    async def wait(name: str, ticket: tuple[int, int]) -> None:
        await turns.acquire(ticket)
        got.append(name)
        turns.release()

    first_bulk, second_bulk = turns.ticket(3), turns.ticket(3)
    critical = turns.ticket(0)
    tasks = [
        asyncio.create_task(wait("bulk-b", second_bulk)),
        asyncio.create_task(wait("bulk-a", first_bulk)),
        asyncio.create_task(wait("critical", critical)),
    ]
    while len(turns.waiting()) < 3:
        turns.queued.clear()
        await asyncio.wait_for(turns.queued.wait(), WAIT)
    assert turns.more_urgent(holder)
    assert not turns.more_urgent(critical)
    turns.release()
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
    assert got == ["critical", "bulk-a", "bulk-b"]
    # A cancelled waiter leaves no hole: the turn is free again.
    await turns.acquire(turns.ticket(3))
    blocked = asyncio.create_task(turns.acquire(turns.ticket(0)))
    await asyncio.wait_for(turns.queued.wait(), WAIT)
    blocked.cancel()
    await asyncio.gather(blocked, return_exceptions=True)
    turns.release()
    assert turns.waiting() == []
    await asyncio.wait_for(turns.acquire(turns.ticket(2)), WAIT)


def _busiest(times: list[float], width: float) -> int:
    """The most of `times` (sorted) in any window [t, t + width)."""
    return max(sum(1 for u in times[i:] if u < t + width) for i, t in enumerate(times))


async def test_a_critical_takes_the_next_token_ahead_of_the_bulk_that_spent_the_last(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """Rate 100/s, burst 1, a bulk backlog taking every token as it comes: a critical
    message finding the bucket just emptied is claimed in that round all the same (the
    next token is its own, ahead of the bulk), and the driver sees it only when that
    token is there, before any bulk message accepted before it. The rate holds: no two
    submits closer than a token apart."""
    gw = await open_gateway(
        [{"name": "main", "type": "loopback", "latency": 0, "rate": 100, "burst": 1}],
        queue={"classes": dict.fromkeys(("critical", "bulk"), NO_RECEIPTS)},
    )
    seen: list[tuple[float, str]] = []
    driver = loopback(gw)
    original = driver.submit

    async def recording_submit(sms: OutboundSms) -> SubmitResult:
        seen.append((clock.monotonic(), sms.parts[0]))
        return await original(sms)

    driver.submit = recording_submit  # type: ignore[method-assign]
    for i in range(4):
        await accept(gw, body=f"bulk{i}", priority="bulk")
    scheduler, route = gw.scheduler, gw.routes["main"]
    await scheduler.run_until_idle()  # the one token there was: bulk0 sent
    assert [body for _, body in seen] == ["bulk0"]

    critical = await accept(gw, body="critical", priority="critical")
    await scheduler._round()
    assert route.dispatched == 1  # claimed now, with no token here yet
    assert route.bucket.wait_time(clock.monotonic()) > 0.01  # its token ahead of bulk1's
    await clock.wait_sleeping(1)  # its submit waits for the token
    assert [body for _, body in seen] == ["bulk0"]
    clock.advance(0.01)
    await asyncio.wait_for(asyncio.gather(*scheduler._tasks), WAIT)
    assert [body for _, body in seen] == ["bulk0", "critical"]
    assert await state_of(gw, critical) == "sent"
    for _ in range(10):  # a token each 10 ms (the clock's sums may land a hair short)
        clock.advance(0.01)
        await scheduler.run_until_idle()
    assert [body for _, body in seen] == ["bulk0", "critical", "bulk1", "bulk2", "bulk3"]
    times = [t for t, _ in seen]
    assert all(b - a >= 0.01 - 1e-9 for a, b in itertools.pairwise(times)), times


async def test_a_critical_takes_no_token_further_ahead_than_its_claim_covers(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """At 10/s the next token is a tenth of a second off: longer than a claim's commit,
    so the critical message waits queued for it (a message held `sending` that long
    would come back a possible duplicate after a crash for nothing)."""
    gw = await open_gateway(
        [{"name": "main", "type": "loopback", "latency": 0, "rate": 10, "burst": 1}],
        queue={"classes": dict.fromkeys(("critical", "bulk"), NO_RECEIPTS)},
    )
    await accept(gw, body="bulk", priority="bulk")
    await gw.scheduler.run_until_idle()
    critical = await accept(gw, body="critical", priority="critical")
    await gw.scheduler.run_until_idle()
    assert gw.routes["main"].dispatched == 0
    assert await state_of(gw, critical) == "queued"
    clock.advance(0.1)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, critical) == "sent"


def test_a_token_taken_ahead_holds_the_rate_in_every_window() -> None:
    """Bulk takes every token it can, criticals come at odd times and take the next one
    ahead: counting each token where it is used (a take at once, a reservation when its
    token comes), no window of T seconds holds more than burst + rate * T."""
    rate, burst = 100.0, 2
    bucket = TokenBucket(rate, burst, 0.0)
    used: list[float] = []
    for step in range(2000):  # 2 s in steps of 1 ms
        now = step / 1000
        if step % 37 == 0:
            ahead = bucket.reserve(now, CRITICAL_AHEAD_S)
            assert ahead is not None and ahead <= 2 / rate  # one bulk token, then its own
            used.append(now + ahead)
        if bucket.try_take(now):
            used.append(now)
    used.sort()
    for width in (0.01, 0.1, 0.5, 1.0):
        assert _busiest(used, width) <= burst + rate * width + 1e-9, width
    assert bucket.reserve(2.0, 0.0) is None  # not here now, and nothing taken
    assert bucket.wait_time(2.0) > 0
