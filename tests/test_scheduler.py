"""The dispatcher on a fake clock with real loopback routes and a real store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from drivers.base import OutboundSms, SubmitResult
from gateway.app import Gateway
from gateway.models import State
from tests.conftest import GatewayFactory, accept, loopback, settle_receipts, state_of
from tests.store_rows import message_row


def fail_first_submit(gw: Gateway, error: Exception) -> None:
    """Make the route's first submit raise `error`; later ones go through."""
    driver = loopback(gw)
    original = driver.submit
    calls = 0

    async def submit(sms: OutboundSms) -> SubmitResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error
        return await original(sms)

    driver.submit = submit  # type: ignore[method-assign]


async def sent_with(gw: Gateway, carrier_id: str) -> tuple[str, float]:
    """A message the carrier accepted under `carrier_id`, recorded as the scheduler does."""
    mid = await accept(gw)
    now = gw.clock.time()
    assert await gw.store.claim(mid, "main", now) is not None
    assert await gw.store.mark_sent(mid, "main", [carrier_id], now) is State.SENT
    return mid, now


async def test_message_goes_queued_sending_sent_delivered(
    open_gateway: GatewayFactory, clock
) -> None:
    gw = await open_gateway()
    mid = await accept(gw)
    assert await state_of(gw, mid) == "queued"
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, mid) == "sent"
    clock.advance(5)
    await settle_receipts(gw)
    assert await state_of(gw, mid) == "delivered"
    states = [e.state for e in await gw.store.events(mid)]
    assert states == ["queued", "sending", "sent", "delivered"]


async def test_sending_is_committed_before_the_driver_sees_the_message(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    seen: list[str] = []
    driver = loopback(gw)
    original = driver.submit

    async def spying_submit(sms: OutboundSms) -> SubmitResult:
        seen.append(await state_of(gw, sms.message_id))
        return await original(sms)

    driver.submit = spying_submit  # type: ignore[method-assign]
    await accept(gw)
    await gw.scheduler.run_until_idle()
    assert seen == ["sending"]


async def test_higher_class_always_goes_first(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(
        [{"name": "main", "type": "loopback", "latency": 0, "window": 1}],
        queue={
            "classes": {
                p: {"expires_after": 3600, "max_attempts": 3, "min_share": 0}
                for p in ("critical", "high", "normal", "bulk")
            }
        },
    )
    order: list[str] = []
    driver = loopback(gw)
    original = driver.submit

    async def recording_submit(sms: OutboundSms) -> SubmitResult:
        order.append(sms.parts[0])
        return await original(sms)

    driver.submit = recording_submit  # type: ignore[method-assign]
    for i in range(3):
        await accept(gw, body=f"bulk{i}", priority="bulk")
    await accept(gw, body="normal", priority="normal")
    await accept(gw, body="high", priority="high")
    await accept(gw, body="critical", priority="critical")
    await gw.scheduler.run_until_idle()
    assert order == ["critical", "high", "normal", "bulk0", "bulk1", "bulk2"]


async def test_lower_class_keeps_its_minimum_share(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(
        [{"name": "main", "type": "loopback", "latency": 0, "window": 1}],
        queue={"classes": {"bulk": {"expires_after": 3600, "max_attempts": 3, "min_share": 0.25}}},
    )
    order: list[str] = []
    driver = loopback(gw)
    original = driver.submit

    async def recording_submit(sms: OutboundSms) -> SubmitResult:
        order.append(sms.parts[0][:4])
        return await original(sms)

    driver.submit = recording_submit  # type: ignore[method-assign]
    for i in range(5):
        await accept(gw, body=f"bulk{i}", priority="bulk")
    for i in range(20):
        await accept(gw, body=f"crit{i}", priority="critical")
    await gw.scheduler.run_until_idle()
    first_twenty = order[:20]
    # 0.25 of a turn per critical send: bulk gets about one turn in five, not zero.
    assert 3 <= first_twenty.count("bulk") <= 5
    assert order.count("bulk") == 5


async def test_route_rate_is_a_token_bucket_on_the_clock(
    open_gateway: GatewayFactory, clock
) -> None:
    gw = await open_gateway(
        [
            {
                "name": "main",
                "type": "loopback",
                "latency": 0,
                "rate": 10,
                "burst": 2,
                "receipt_delay": 100,
            }
        ]
    )
    ids = [await accept(gw, body=f"m{i}") for i in range(12)]
    await gw.scheduler.run_until_idle()
    assert [await state_of(gw, i) for i in ids].count("sent") == 2  # the burst
    for expected in range(3, 13):
        clock.advance(0.1)
        await gw.scheduler.run_until_idle()
        sent = [await state_of(gw, i) for i in ids].count("sent")
        assert sent == expected


async def test_window_caps_submits_at_the_carrier(open_gateway: GatewayFactory, clock) -> None:
    gw = await open_gateway(
        [{"name": "main", "type": "loopback", "latency": 1.0, "window": 3, "claim_ahead": 3}],
        # No receipts: the only sleepers on the clock are the submits at the carrier.
        queue={
            "classes": {"normal": {"expires_after": 3600, "max_attempts": 3, "want_receipt": False}}
        },
    )
    for i in range(8):
        await accept(gw, body=f"m{i}")
    await gw.scheduler._round()
    route, carrier = gw.routes["main"], loopback(gw)
    # Three at the carrier, three more claimed and waiting for a slot, two still queued.
    assert route.dispatched == 6
    await clock.wait_sleeping(3)
    assert (route.in_flight, carrier.health().in_flight) == (3, 3)
    clock.advance(1.0)  # the first three are answered; the claimed three move up
    await clock.wait_sleeping(3)
    assert (route.in_flight, carrier.health().in_flight) == (3, 3)
    assert carrier.health().counters["submitted"] == 3
    clock.advance(1.0)
    await asyncio.gather(*gw.scheduler._tasks)
    assert carrier.health().counters["submitted"] == 6
    assert (route.dispatched, route.in_flight) == (0, 0)


async def test_transient_error_retries_with_backoff_then_fails(
    open_gateway: GatewayFactory, clock
) -> None:
    gw = await open_gateway(
        [{"name": "main", "type": "loopback", "latency": 0, "transient_prefixes": ["+1202"]}],
        queue={
            "retry_base": 10,
            "classes": {"normal": {"expires_after": 86400, "max_attempts": 3}},
        },
    )
    mid = await accept(gw)
    await gw.scheduler.run_until_idle()
    row = await message_row(gw.store, mid)
    assert row["state"] == "queued"
    assert row["attempts"] == 1
    assert row["error_code"] == "loopback:busy"
    first_delay = row["due_at"] - clock.time()
    assert 5 <= first_delay <= 10  # equal jitter: half of 10 s fixed, half random
    await gw.scheduler.run_until_idle()
    assert (await message_row(gw.store, mid))["attempts"] == 1  # not due yet: nothing sent
    clock.advance(first_delay)
    await gw.scheduler.run_until_idle()
    row = await message_row(gw.store, mid)
    assert row["attempts"] == 2
    assert 10 <= row["due_at"] - clock.time() <= 20
    clock.advance(20)
    await gw.scheduler.run_until_idle()
    row = await message_row(gw.store, mid)
    assert row["state"] == "failed"
    assert row["error_code"] == "loopback:busy"


async def test_permanent_error_fails_at_once(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(
        [{"name": "main", "type": "loopback", "latency": 0, "reject_prefixes": ["+1202"]}]
    )
    mid = await accept(gw)
    await gw.scheduler.run_until_idle()
    row = await message_row(gw.store, mid)
    # The refused submit was an attempt all the same.
    assert (row["state"], row["error_code"], row["attempts"]) == ("failed", "loopback:reject", 1)


async def test_queued_message_expires_instead_of_going_late(
    open_gateway: GatewayFactory, clock
) -> None:
    gw = await open_gateway(
        [{"name": "main", "type": "loopback", "latency": 0, "rate": 1, "burst": 1}]
    )
    first = await accept(gw)
    late = await accept(gw, expires_at=datetime.fromtimestamp(clock.time() + 0.5, UTC))
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, first) == "sent"
    assert await state_of(gw, late) == "queued"
    clock.advance(1.0)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, late) == "expired"


async def test_send_at_schedules(open_gateway: GatewayFactory, clock) -> None:
    gw = await open_gateway()
    mid = await accept(gw, send_at=datetime.fromtimestamp(clock.time() + 60, UTC))
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, mid) == "scheduled"
    clock.advance(59)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, mid) == "scheduled"
    clock.advance(1)
    await gw.scheduler.run_until_idle()
    states = [e.state for e in await gw.store.events(mid)]
    assert states == ["scheduled", "queued", "sending", "sent"]


async def test_fails_over_to_next_route_when_first_is_down(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(
        [
            {"name": "primary", "type": "loopback", "latency": 0},
            {"name": "backup", "type": "loopback", "latency": 0},
        ]
    )
    loopback(gw, "primary").set_down(True)
    mid = await accept(gw)
    await gw.scheduler.run_until_idle()
    row = await message_row(gw.store, mid)
    assert (row["state"], row["route"]) == ("sent", "backup")
    loopback(gw, "primary").set_down(False)
    mid2 = await accept(gw)
    await gw.scheduler.run_until_idle()
    assert (await message_row(gw.store, mid2))["route"] == "primary"


async def test_rules_by_prefix_and_class(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(
        [
            {"name": "uk", "type": "loopback", "latency": 0, "prefixes": ["+44"]},
            {"name": "urgent", "type": "loopback", "latency": 0, "classes": ["critical"]},
            {"name": "rest", "type": "loopback", "latency": 0},
        ]
    )
    uk = await accept(gw, to="+447911123456")
    crit = await accept(gw, priority="critical")
    other = await accept(gw)
    await gw.scheduler.run_until_idle()
    routes = [(await message_row(gw.store, m))["route"] for m in (uk, crit, other)]
    assert routes == ["uk", "urgent", "rest"]


async def test_restart_requeues_sending_as_possible_duplicate(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    mid = await accept(gw)
    claimed = await gw.store.claim(mid, "main", gw.clock.time())  # as if we crashed mid-submit
    assert claimed is not None
    await gw.stop()
    gw2 = await open_gateway()
    row = await message_row(gw2.store, mid)
    assert row["state"] == "queued"
    assert row["possible_duplicate"] == 1
    assert row["error_code"] == "gateway:restart"
    await gw2.scheduler.run_until_idle()
    assert await state_of(gw2, mid) == "sent"


async def test_cancelled_message_is_never_sent(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    mid = await accept(gw)
    assert await gw.store.cancel(mid, gw.clock.time()) is State.CANCELLED
    gw.scheduler.forget(mid)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, mid) == "cancelled"
    assert loopback(gw).health().counters["submitted"] == 0


async def test_multipart_is_delivered_only_when_every_part_is(
    open_gateway: GatewayFactory, clock
) -> None:
    gw = await open_gateway()
    mid = await accept(gw, body="x" * 400)
    await gw.scheduler.run_until_idle()
    row = await message_row(gw.store, mid)
    assert row["segments"] == 3
    events = await gw.store.events(mid)
    carrier_ids = events[-1].carrier_id.split(",")
    assert len(carrier_ids) == 3
    clock.advance(5)
    await settle_receipts(gw)
    assert await state_of(gw, mid) == "delivered"


async def test_failed_receipt_fails_the_message(open_gateway: GatewayFactory, clock) -> None:
    gw = await open_gateway(
        [
            {
                "name": "main",
                "type": "loopback",
                "latency": 0,
                "receipt_delay": 1,
                "undelivered_prefixes": ["+1202"],
            }
        ]
    )
    mid = await accept(gw, body="y" * 200)
    await gw.scheduler.run_until_idle()
    clock.advance(1)
    await settle_receipts(gw)
    row = await message_row(gw.store, mid)
    assert (row["state"], row["error_code"]) == ("failed", "loopback:undeliverable")


async def test_receipt_before_submit_response_is_kept_and_applied(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    mid = await accept(gw)
    now = gw.clock.time()
    assert await gw.store.apply_receipt("main", "early-1", "delivered", None, now) is None
    assert await gw.store.claim(mid, "main", now) is not None
    assert await gw.store.mark_sent(mid, "main", ["early-1"], now) is State.DELIVERED


async def test_duplicate_and_intermediate_receipts_are_harmless(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    mid, now = await sent_with(gw, "c1")
    assert await gw.store.apply_receipt("main", "c1", "enroute", None, now) is None
    assert await gw.store.apply_receipt("main", "c1", "delivered", None, now) == (
        mid,
        State.DELIVERED,
    )
    assert await gw.store.apply_receipt("main", "c1", "failed", "x", now) is None
    assert await gw.store.apply_receipt("main", "c1", "delivered", None, now) is None
    assert await state_of(gw, mid) == "delivered"


@pytest.mark.parametrize("attempts", [1, 2, 3, 8, 30])
def test_backoff_grows_and_stays_under_the_cap(attempts: int) -> None:
    from drivers.clock import FakeClock
    from gateway.config import QueueConfig
    from gateway.metrics import Metrics
    from gateway.router import Router
    from gateway.scheduler import Scheduler

    queue = QueueConfig(retry_base=2, retry_cap=60)
    s = Scheduler(None, {}, Router([]), queue, FakeClock(), Metrics())  # type: ignore[arg-type]
    ceiling = min(60, 2 * 2 ** (attempts - 1))
    for _ in range(50):
        assert ceiling / 2 <= s.backoff(attempts) <= ceiling


async def test_retry_after_from_the_carrier_is_honoured(
    open_gateway: GatewayFactory, clock
) -> None:
    from drivers.base import TransientSendError

    gw = await open_gateway()
    fail_first_submit(
        gw, TransientSendError("throttled", code="test:throttled", retry_after=120, maybe_sent=True)
    )
    mid = await accept(gw)
    await gw.scheduler.run_until_idle()
    row = await message_row(gw.store, mid)
    assert row["due_at"] - clock.time() == pytest.approx(120)
    assert row["possible_duplicate"] == 1  # the carrier may have taken it before failing
    clock.advance(119)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, mid) == "queued"
    clock.advance(1)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, mid) == "sent"


async def test_route_that_was_not_ready_is_retried_after_its_cool_down(
    open_gateway: GatewayFactory, clock
) -> None:
    from drivers.base import DriverNotReady

    gw = await open_gateway()
    fail_first_submit(gw, DriverNotReady("reconnecting", code="test:not_ready"))
    mid = await accept(gw)
    await gw.scheduler.run_until_idle()
    row = await message_row(gw.store, mid)
    assert (row["state"], row["attempts"]) == ("queued", 0)  # not ready costs no attempt
    wake_in = await gw.scheduler._round()
    assert 0 < wake_in <= 1.0
    clock.advance(wake_in)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, mid) == "sent"


async def test_receipt_found_under_an_alternate_spelling_of_the_id(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    mid, now = await sent_with(gw, "1F4")  # the submit answer, in hex
    applied = await gw.store.apply_receipt(
        "main", "500", "delivered", None, now, alternate_ids=("1f4", "1F4")
    )
    assert applied == (mid, State.DELIVERED)


async def test_throttling_lowers_the_route_rate_once_and_it_comes_back_when_busy(
    open_gateway: GatewayFactory, clock
) -> None:
    """A throttle with nothing accepted over the last second halves the rate (never below
    a tenth of the configured one); with a queue waiting the rate is probed back up to
    the configured one, never beyond (gateway/throttle_adapt.py)."""
    from drivers.base import DriverNotReady

    # burst 2: two tokens may build up between two of the test's 50 ms steps
    gw = await open_gateway(
        [{"name": "main", "type": "loopback", "latency": 0, "rate": 10, "burst": 2}]
    )
    fail_first_submit(
        gw, DriverNotReady("slow down", code="test:throttled", retry_after=0.5, throttled=True)
    )
    route = gw.routes["main"]
    mid = await accept(gw)
    await gw.scheduler.run_until_idle()
    assert route.bucket.rate == pytest.approx(5.0)
    assert route.discovered_rate == pytest.approx(5.0)
    assert (await message_row(gw.store, mid))["attempts"] == 0
    clock.advance(0.5)
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, mid) == "sent"
    assert route.bucket.rate == pytest.approx(5.0)  # no probing within the throttle's second
    waiting = [await accept(gw) for _ in range(60)]
    seen = []
    for _ in range(120):  # six seconds with a queue: the rate limits the route
        clock.advance(0.05)
        await gw.scheduler.run_until_idle()
        seen.append(route.bucket.rate)
    assert max(seen) == pytest.approx(10.0)  # back to the contract, not beyond
    assert route.bucket.rate == pytest.approx(10.0)
    assert {await state_of(gw, m) for m in waiting[:30]} <= {"sent", "delivered"}


async def test_attempts_count_every_submit(open_gateway: GatewayFactory, clock) -> None:
    """Issue 10, point 14: a message sent at the first try shows one attempt, one sent
    after a refused try two; a try the route could not take (not ready) is none."""
    from drivers.base import DriverNotReady, TransientSendError

    gw = await open_gateway(queue={"retry_base": 1, "retry_cap": 1})
    first = await accept(gw)
    await gw.scheduler.run_until_idle()
    row = await message_row(gw.store, first)
    assert (row["state"], row["attempts"]) == ("sent", 1)
    sending = [e for e in await gw.store.events(first) if e.state == "sending"]
    assert [e.attempt for e in sending] == [1]

    fail_first_submit(gw, TransientSendError("busy", code="test:busy"))
    second = await accept(gw)
    await gw.scheduler.run_until_idle()
    assert (await message_row(gw.store, second))["attempts"] == 1
    clock.advance(1)
    await gw.scheduler.run_until_idle()
    row = await message_row(gw.store, second)
    assert (row["state"], row["attempts"]) == ("sent", 2)

    fail_first_submit(gw, DriverNotReady("reconnecting", code="test:not_ready"))
    third = await accept(gw)
    await gw.scheduler.run_until_idle()
    assert (await message_row(gw.store, third))["attempts"] == 0
    clock.advance(1)
    await gw.scheduler.run_until_idle()
    row = await message_row(gw.store, third)
    assert (row["state"], row["attempts"]) == ("sent", 1)
