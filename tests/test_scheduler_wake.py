"""A new message wakes the dispatch loop only when a round would do something for it:
it may go now, or it falls due or expires before the round the loop planned."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.intake import SendRequest
from tests.conftest import CANARY_NUMBER, GatewayFactory, accept, state_of
from tests.test_accept_cost import Opcodes

# One token a second and one in the bucket: after the first send, what is due waits a
# second for the next token, and that is the round the loop plans.
ONE_A_SECOND = [{"name": "main", "type": "loopback", "latency": 0, "rate": 1, "burst": 1}]


async def round_as_run_does(gw: Gateway) -> None:
    """One round of `Scheduler.run`, which then sleeps until the round it planned."""
    scheduler = gw.scheduler
    scheduler._wake.clear()
    scheduler._sleep_until = None
    delay = await scheduler._round()
    scheduler._sleep_until = gw.clock.time() + delay


async def run_until(gw: Gateway, clock: FakeClock, until: float) -> None:
    """What `Scheduler.run` does up to `until` on the fake clock: a round each time
    something wakes it or its planned round comes, nothing in between."""
    scheduler = gw.scheduler
    for _ in range(100):
        planned = scheduler._sleep_until
        if scheduler._wake.is_set() or planned is None or clock.time() >= planned:
            await round_as_run_does(gw)
            continue
        if clock.time() >= until:
            return
        clock.advance(min(planned, until) - clock.time())
    raise AssertionError("the loop never slept")


async def backlog(open_gateway: GatewayFactory, clock: FakeClock) -> tuple[Gateway, str]:
    """A gateway whose loop sleeps until the next token, a due message waiting for it."""
    gw = await open_gateway(ONE_A_SECOND)
    await accept(gw, body="first")
    waiting = await accept(gw, body="second")
    await run_until(gw, clock, clock.time())
    await gw.scheduler._settle()  # the first is sent: its freed slot wakes one more round
    await run_until(gw, clock, clock.time())
    assert await state_of(gw, waiting) == "queued"
    assert gw.scheduler._sleep_until == clock.time() + 1.0
    return gw, waiting


async def test_a_message_behind_a_due_one_of_its_class_wakes_no_round(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw, waiting = await backlog(open_gateway, clock)
    behind = await accept(gw, body="third")
    assert not gw.scheduler._wake.is_set()
    await run_until(gw, clock, clock.time() + 1.0)
    await gw.scheduler._settle()
    assert (await state_of(gw, waiting), await state_of(gw, behind)) == ("sent", "queued")


async def test_a_message_expiring_before_the_planned_round_is_expired_on_time(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw, waiting = await backlog(open_gateway, clock)
    start = clock.time()
    short = await accept(gw, body="short", expires_at=datetime.fromtimestamp(start + 0.5, UTC))
    await run_until(gw, clock, start + 0.6)
    assert (await state_of(gw, short), await state_of(gw, waiting)) == ("expired", "queued")


async def test_a_message_scheduled_before_the_planned_round_is_queued_on_time(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw, _ = await backlog(open_gateway, clock)
    start = clock.time()
    soon = await accept(gw, body="soon", send_at=datetime.fromtimestamp(start + 0.5, UTC))
    later = await accept(gw, body="later", send_at=datetime.fromtimestamp(start + 30, UTC))
    await run_until(gw, clock, start + 0.6)
    assert (await state_of(gw, soon), await state_of(gw, later)) == ("queued", "scheduled")


async def test_a_critical_message_with_no_critical_ahead_wakes_a_round(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw, waiting = await backlog(open_gateway, clock)
    critical = await accept(gw, body="urgent", priority="critical")
    assert gw.scheduler._wake.is_set()  # it may go at once: a round looks
    await run_until(gw, clock, clock.time() + 1.0)
    await gw.scheduler._settle()
    assert (await state_of(gw, critical), await state_of(gw, waiting)) == ("sent", "queued")


async def test_accepts_behind_a_backlog_leave_the_running_loop_asleep(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(ONE_A_SECOND)
    scheduler = gw.scheduler
    await accept(gw, body="first")
    await scheduler.run_until_idle()  # the bucket's one token spent
    waiting = await accept(gw, body="second")
    rounds = 0
    rounded = asyncio.Event()
    real_round = scheduler._round

    async def counted_round() -> float:
        nonlocal rounds
        delay = await real_round()
        rounds += 1
        rounded.set()
        return delay

    scheduler._round = counted_round  # type: ignore[method-assign]
    loop = asyncio.create_task(scheduler.run())
    try:
        async with asyncio.timeout(10):
            await rounded.wait()  # `run` goes to sleep in the same step
        assert scheduler._sleep_until == clock.time() + 1.0
        for i in range(20):
            await accept(gw, body=f"behind {i}")
            assert not scheduler._wake.is_set()
        assert (rounds, await state_of(gw, waiting)) == (1, "queued")
    finally:
        scheduler.stop_claiming()
        async with asyncio.timeout(10):
            await loop


async def accept_together(gw: Gateway, requests: list[SendRequest], order: list[int]) -> list[str]:
    """Accept messages as a batch does (one commit, one hand-over to the scheduler),
    handed over in `order` (places in `requests`, whose ids are drawn in their order)."""
    now = gw.clock.time()
    prepared = [gw.intake.prepare(r, None, now) for r in requests]
    handed = [prepared[i] for i in order]
    await gw.store.insert(gw.intake.statements(handed))
    gw.intake.accepted(handed)
    return [p.message.id for p in handed]


async def test_a_batch_behind_a_due_one_of_its_class_wakes_no_round(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw, waiting = await backlog(open_gateway, clock)
    behind = await accept_together(gw, [SendRequest(to=CANARY_NUMBER, body="b")] * 3, [0, 1, 2])
    assert not gw.scheduler._wake.is_set()
    await run_until(gw, clock, clock.time() + 1.0)
    await gw.scheduler._settle()
    assert await state_of(gw, waiting) == "sent"
    assert [await state_of(gw, m) for m in behind] == ["queued"] * 3


async def test_a_batch_with_one_message_expiring_before_the_planned_round_wakes_one(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw, waiting = await backlog(open_gateway, clock)
    start = clock.time()
    soon = datetime.fromtimestamp(start + 0.5, UTC)
    requests = [SendRequest(to=CANARY_NUMBER, body="b")] * 2
    requests.append(SendRequest(to=CANARY_NUMBER, body="short", expires_at=soon))
    *_, short = await accept_together(gw, requests, [0, 1, 2])
    assert gw.scheduler._wake.is_set()
    await run_until(gw, clock, start + 0.6)
    assert (await state_of(gw, short), await state_of(gw, waiting)) == ("expired", "queued")


async def test_a_batch_whose_later_message_heads_an_empty_class_wakes_a_round(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """The class's head is the batch's message with the lowest id, handed over after
    another: the first one's check finds the head holding it back, the head's must not
    be skipped."""
    gw, _ = await backlog(open_gateway, clock)
    urgent = SendRequest(to=CANARY_NUMBER, body="urgent", priority="critical")
    _, head = await accept_together(gw, [urgent, urgent], [1, 0])
    assert gw.scheduler._wake.is_set()
    await run_until(gw, clock, clock.time() + 1.0)
    await gw.scheduler._settle()
    assert await state_of(gw, head) == "sent"


# Bytecodes per message of a batch's hand-over to a sleeping loop behind a due head of
# its class (`Intake.accepted` of 500): 135 when each message's round check was a call
# and a clock read, 98 with one check per class (session 35, s35-batch).
BATCH_HANDOVER_BYTECODES_PER_MESSAGE = 105


async def test_a_batch_behind_a_due_head_is_handed_over_with_one_check(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw, _ = await backlog(open_gateway, clock)
    now = clock.time()
    prepared = [
        gw.intake.prepare(SendRequest(to=CANARY_NUMBER, body="b"), None, now) for _ in range(500)
    ]
    await gw.store.insert(gw.intake.statements(prepared))
    counter = Opcodes()
    before = sys.gettrace()
    sys.settrace(counter.trace)
    try:
        gw.intake.accepted(prepared)
    finally:
        sys.settrace(before)
    assert not gw.scheduler._wake.is_set()
    per_message = counter.count / len(prepared)
    assert per_message <= BATCH_HANDOVER_BYTECODES_PER_MESSAGE, f"{per_message:.0f} bytecodes"
