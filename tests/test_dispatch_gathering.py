"""A backlog waits for its route to save up most of its burst, then goes in one claim
(issue 16, point 3: one commit of `sending` for several messages at saturation). The
rate holds, and a critical message never waits for it."""

from __future__ import annotations

import asyncio
from typing import Any

from drivers.clock import FakeClock
from gateway.app import Gateway
from tests.conftest import GatewayFactory, accept, loopback, state_of

ROUTE = {
    "name": "main",
    "type": "loopback",
    "latency": 0,
    "rate": 10,
    "burst": 10,
    "window": 20,
    "receipt_delay": 3600,
}


def claim_sizes(gw: Gateway) -> list[int]:
    """How many messages each claim the rounds make holds."""
    sizes: list[int] = []
    original = gw.store.claim_group

    def recording(ids: list[str], *args: Any, **kwargs: Any) -> Any:
        sizes.append(len(ids))
        return original(ids, *args, **kwargs)

    gw.store.claim_group = recording  # type: ignore[method-assign]
    return sizes


async def sent(gw: Gateway, ids: list[str]) -> int:
    """How many the carrier took (the loopback's own count; `ids` name whose)."""
    del ids
    return int(loopback(gw).health().counters["submitted"])


async def test_a_backlog_waits_for_most_of_the_burst_and_goes_in_one_claim(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway([ROUTE])
    sizes = claim_sizes(gw)
    ids = [await accept(gw, body=f"m{i}") for i in range(30)]
    await gw.scheduler.run_until_idle()
    assert await sent(gw, ids) == 10  # the full bucket at once
    # 10/s, a burst of 10: it gathers 9 (one token, 50 ms of them rounded up, short).
    for step in range(1, 9):  # 1 to 8 tokens saved up: the backlog waits
        clock.advance(0.1)
        await gw.scheduler.run_until_idle()
        assert await sent(gw, ids) == 10, step
    clock.advance(0.1)  # the ninth token: nine claimed together
    await gw.scheduler.run_until_idle()
    assert await sent(gw, ids) == 19
    assert sizes == [10, 9]


async def test_the_rate_holds_while_a_backlog_gathers(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway([ROUTE])
    ids = [await accept(gw, body=f"m{i}") for i in range(40)]
    await gw.scheduler.run_until_idle()
    for tick in range(1, 41):  # 2 s in steps of 50 ms
        clock.advance(0.05)
        await gw.scheduler.run_until_idle()
        # Never more than the burst and the rate allow, never more than a gathering behind.
        assert 10 + tick * 0.5 - 9 <= await sent(gw, ids) <= 10 + tick * 0.5, tick


async def test_a_critical_message_takes_a_saved_token_at_once(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway([ROUTE])
    backlog = [await accept(gw, body=f"m{i}", priority="bulk") for i in range(30)]
    await gw.scheduler.run_until_idle()
    clock.advance(0.1)  # one token: the backlog gathers
    critical = await accept(gw, body="alarm", priority="critical")
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, critical) == "sent"
    assert await sent(gw, backlog) == 11  # the backlog's first ten and the critical one


async def test_a_message_alone_is_not_held_back(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway([ROUTE])
    first = [await accept(gw, body=f"m{i}") for i in range(10)]
    await gw.scheduler.run_until_idle()
    assert await sent(gw, first) == 10
    clock.advance(0.1)
    alone = await accept(gw, body="one")
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, alone) == "sent"


async def test_no_more_than_a_window_is_gathered(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway([{**ROUTE, "burst": 100, "window": 4, "claim_ahead": 4}])
    sizes = claim_sizes(gw)
    for i in range(40):
        await accept(gw, body=f"m{i}")
    await gw.scheduler._round()  # as many as the window and claim_ahead hold
    assert sizes == [4, 4]
    await asyncio.gather(*gw.scheduler._tasks)
    # 92 tokens left: a window's worth goes now, not after 99 were saved up.
    await gw.scheduler._round()
    await asyncio.gather(*gw.scheduler._tasks)
    assert sizes == [4, 4, 4, 4]
