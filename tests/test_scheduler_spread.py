"""Spreading (issue 15, point 4): while more than one message of a spreading class
(`[queue] spread_classes`, critical by default) waits, each goes to any route its rules
allow that can take it now, preference order first, instead of waiting for the first;
every route stays within its own rate and window. The dispatcher on a fake clock with
real loopback routes and a real store."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from drivers.base import OutboundSms, SubmitResult
from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.config import ConfigError, from_mapping
from tests.conftest import GatewayFactory, accept, loopback
from tests.store_rows import message_row

# No receipts: the only sleepers on the clock are the scheduler's own waits.
NO_RECEIPTS = {
    "classes": {
        p: {"expires_after": 3600, "max_attempts": 3, "want_receipt": False}
        for p in ("critical", "high", "normal", "bulk")
    }
}


def route(name: str, rate: float | None, **more: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"name": name, "type": "loopback", "latency": 0, "window": 50}
    if rate is not None:
        table["rate"] = rate
    return {**table, **more}


def record_submits(gw: Gateway, clock: FakeClock) -> list[tuple[float, str]]:
    """(fake time, route) of every submit any route's driver sees."""
    seen: list[tuple[float, str]] = []
    for name in gw.routes:
        driver = loopback(gw, name)
        original = driver.submit

        async def submit(
            sms: OutboundSms, _name: str = name, _orig: Any = original
        ) -> SubmitResult:
            seen.append((clock.monotonic(), _name))
            result: SubmitResult = await _orig(sms)
            return result

        driver.submit = submit  # type: ignore[method-assign]
    return seen


async def run_until_sent(gw: Gateway, clock: FakeClock, seen: list[Any], count: int) -> float:
    """Dispatch, moving the fake clock to each next wake-up, until `count` submits were
    made; returns the fake seconds it took."""
    start = clock.monotonic()
    for _ in range(10 * count):
        await gw.scheduler.run_until_idle()
        if len(seen) >= count:
            return clock.monotonic() - start
        clock.advance(max(await gw.scheduler._round(), 1e-3))
    raise AssertionError(f"only {len(seen)} of {count} submits were made")


def within_rate(times: list[float], rate: float, burst: int) -> bool:
    """No interval holds more submits than the bucket allows: burst + rate x its length."""
    times = sorted(times)
    return all(
        j - i + 1 <= burst + rate * (times[j] - times[i]) + 1e-6
        for i, j in itertools.combinations_with_replacement(range(len(times)), 2)
    )


async def accept_many(gw: Gateway, count: int, priority: str) -> list[str]:
    return [await accept(gw, body=f"m{i}", priority=priority) for i in range(count)]


async def test_critical_spreads_over_every_route_each_at_its_own_rate(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway([route("fast", 10), route("slow", 5)], queue=NO_RECEIPTS)
    seen = record_submits(gw, clock)
    ids = await accept_many(gw, 150, "critical")
    took = await run_until_sent(gw, clock, seen, 150)
    # 15/s together, one burst token each: (150 - 2) / 15 = 9.87 s (not 15 s on one route).
    assert 9.5 <= took <= 10.5
    per_route = {name: [t for t, r in seen if r == name] for name in ("fast", "slow")}
    assert 95 <= len(per_route["fast"]) <= 105
    assert 45 <= len(per_route["slow"]) <= 55
    assert within_rate(per_route["fast"], 10, 1)
    assert within_rate(per_route["slow"], 5, 1)
    rows = [await message_row(gw.store, i) for i in ids]
    assert {r["state"] for r in rows} == {"sent"}
    assert sum(r["route"] == "slow" for r in rows) == len(per_route["slow"])


async def test_a_lone_critical_message_takes_the_first_route(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway([route("fast", 10), route("slow", 5)], queue=NO_RECEIPTS)
    seen = record_submits(gw, clock)
    await accept_many(gw, 1, "critical")
    await run_until_sent(gw, clock, seen, 1)
    clock.advance(1)  # the first route has its token again
    await accept_many(gw, 1, "critical")
    await run_until_sent(gw, clock, seen, 2)
    assert [r for _, r in seen] == ["fast", "fast"]  # preference order first


async def test_bulk_class_does_not_spread(open_gateway: GatewayFactory, clock: FakeClock) -> None:
    gw = await open_gateway([route("fast", 10), route("slow", 5)], queue=NO_RECEIPTS)
    seen = record_submits(gw, clock)
    await accept_many(gw, 30, "bulk")
    took = await run_until_sent(gw, clock, seen, 30)
    assert {r for _, r in seen} == {"fast"}  # the busy first route makes bulk wait
    assert took == pytest.approx(2.9, abs=0.05)
    assert within_rate([t for t, _ in seen], 10, 1)


async def test_the_classes_that_spread_are_configured(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(
        [route("fast", 10), route("slow", 5)], queue={**NO_RECEIPTS, "spread_classes": ["bulk"]}
    )
    seen = record_submits(gw, clock)
    await accept_many(gw, 30, "bulk")
    await run_until_sent(gw, clock, seen, 30)
    assert {r for _, r in seen} == {"fast", "slow"}
    await accept_many(gw, 10, "critical")
    await run_until_sent(gw, clock, seen, 40)
    assert {r for _, r in seen[30:]} == {"fast"}


async def test_a_route_down_leaves_the_others_all_of_it(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(
        [route("first", 10), route("second", 10), route("third", 5)], queue=NO_RECEIPTS
    )
    loopback(gw, "first").set_down(True)
    seen = record_submits(gw, clock)
    await accept_many(gw, 60, "critical")
    took = await run_until_sent(gw, clock, seen, 60)
    counts = {name: sum(r == name for _, r in seen) for name in gw.routes}
    assert counts["first"] == 0
    assert 38 <= counts["second"] <= 42
    assert 18 <= counts["third"] <= 22
    assert 3.6 <= took <= 4.2  # (60 - 2) / 15 s
    assert within_rate([t for t, r in seen if r == "second"], 10, 1)
    assert within_rate([t for t, r in seen if r == "third"], 5, 1)


async def test_a_full_window_sends_the_next_message_elsewhere(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(
        [
            route("narrow", None, window=1, claim_ahead=1, latency=1.0),
            route("wide", None, window=1, claim_ahead=1, latency=1.0),
        ],
        queue=NO_RECEIPTS,
    )
    ids = await accept_many(gw, 5, "critical")
    await gw.scheduler._round()
    # Each route's window and claim-ahead are full, not only the first route's.
    assert (gw.routes["narrow"].dispatched, gw.routes["wide"].dispatched) == (2, 2)
    for _ in range(2):  # one at the carrier per route, its second waiting for the slot
        await clock.wait_sleeping(2)
        clock.advance(1.0)
    await asyncio.gather(*gw.scheduler._tasks)
    await gw.scheduler._round()  # the fifth goes to the first route again
    await clock.wait_sleeping(1)
    clock.advance(1.0)
    await asyncio.gather(*gw.scheduler._tasks)
    rows = [await message_row(gw.store, i) for i in ids]
    assert {r["state"] for r in rows} == {"sent"}
    assert [r["route"] for r in rows].count("narrow") == 3


async def test_a_route_kept_for_failover_takes_no_overflow(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(
        [route("carrier", 10), route("modems", 5), route("backup", 10, spread=False)],
        queue=NO_RECEIPTS,
    )
    assert [gw.routes[n].describe()["spread"] for n in gw.routes] == [True, True, False]
    seen = record_submits(gw, clock)
    await accept_many(gw, 30, "critical")
    await run_until_sent(gw, clock, seen, 30)
    assert {r for _, r in seen} == {"carrier", "modems"}
    loopback(gw, "carrier").set_down(True)
    loopback(gw, "modems").set_down(True)
    gw.scheduler.wake()
    await accept_many(gw, 3, "critical")
    await run_until_sent(gw, clock, seen, 33)
    assert [r for _, r in seen[30:]] == ["backup"] * 3  # failover still reaches it


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        ({"spread_classes": ["urgent"]}, "queue.spread_classes[0]"),
        ({"spread_classes": "critical"}, "queue.spread_classes"),
    ],
)
def test_spread_classes_are_checked_at_load(queue: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_mapping({"queue": queue})


def test_a_route_spread_key_is_checked_at_load() -> None:
    bad = {"routes": [{"name": "r", "type": "loopback", "spread": "no"}]}
    with pytest.raises(ConfigError, match=r"routes\[0\]\.spread"):
        from_mapping(bad)


async def test_a_lone_critical_message_waits_for_a_token_of_the_first_route(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """Bulk traffic spent the first route's token: one critical message alone waits the
    tenth of a second for the next rather than go to a slower route."""
    gw = await open_gateway([route("fast", 10), route("slow", 5)], queue=NO_RECEIPTS)
    seen = record_submits(gw, clock)
    await accept_many(gw, 1, "bulk")
    await gw.scheduler.run_until_idle()
    alone = await accept(gw, body="alone", priority="critical")
    await gw.scheduler.run_until_idle()
    assert (await message_row(gw.store, alone))["state"] == "queued"
    await run_until_sent(gw, clock, seen, 2)
    assert [r for _, r in seen] == ["fast", "fast"]


async def test_a_lone_critical_message_leaves_a_route_whose_window_is_full(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(
        [
            route("narrow", None, window=1, claim_ahead=1, latency=1.0),
            route("wide", None, window=1, claim_ahead=1, latency=1.0),
        ],
        queue=NO_RECEIPTS,
    )
    await accept_many(gw, 2, "bulk")
    await gw.scheduler._round()  # the bulk fills the first route's window and claim-ahead
    alone = await accept(gw, body="alone", priority="critical")
    await gw.scheduler._round()
    assert gw.routes["wide"].dispatched == 1
    await clock.wait_sleeping(2)  # a bulk message and the critical one at the carriers
    clock.advance(1.0)
    await clock.wait_sleeping(1)  # the second bulk message, in the slot freed
    clock.advance(1.0)
    await asyncio.gather(*gw.scheduler._tasks)
    assert (await message_row(gw.store, alone))["route"] == "wide"
