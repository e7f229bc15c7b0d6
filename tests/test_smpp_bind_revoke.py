"""Bind slots revoked (a fenced cluster node, `BindSlots.on_revoke`): the SMPP driver
unbinds every session at once, hangs up one whose unbind goes unanswered, binds again
only once a slot is given, and the receipts the carrier still owes reach the account's
other session (the simulator's outbox goes to any bound receiver of the system_id).

Real drivers against the SMSC simulator, which caps the account's sessions and keeps a
session lost without unbind counting for a minute; the slots are a small in-memory
`BindSlots` (the cluster's, in PostgreSQL, are `tests/pg/test_route_binds.py`'s)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from drivers.base import OutboundSms, RouteState
from drivers.clock import FakeClock, SystemClock
from drivers.smpp.driver import SmppDriver
from drivers.smpp.options import SmppOptions
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from tests.sinks import RecordingSink

WAIT = 10.0  # an upper bound on waiting for an event, never an expected duration


class LocalSlots:
    """`cap` slots held in memory; `revoke` calls the drivers' `drop` and gives no slot
    until `allow`."""

    retry_after = 0.02

    def __init__(self, cap: int) -> None:
        self.free = set(range(cap))
        self.refusing = False
        self.asks = 0
        self.released = 0
        self.asked = asyncio.Event()
        self._drops: list[Callable[[float], None]] = []

    async def acquire(self, link: int) -> int | None:
        self.asks += 1
        self.asked.set()
        if self.refusing or not self.free:
            return None
        return self.free.pop()

    async def release(self, slot: int) -> None:
        self.released += 1
        self.free.add(slot)

    def on_revoke(self, drop: Callable[[float], None]) -> None:
        self._drops.append(drop)

    def revoke(self, within: float) -> None:
        self.refusing = True
        for drop in self._drops:
            drop(within)

    async def asks_beyond(self, count: int) -> None:
        while self.asks < count:
            self.asked.clear()
            await self.asked.wait()


@pytest.fixture
async def smsc() -> AsyncIterator[SmscSimulator]:
    config = SimulatorConfig(
        system_id="acme", password="pw", max_sessions=2, lost_session_hold=60.0
    )
    async with SmscSimulator(config, FakeClock()) as sim:
        yield sim


def _driver(
    smsc: SmscSimulator, node: str, slots: LocalSlots, binds: int
) -> tuple[SmppDriver, RecordingSink]:
    options = SmppOptions(
        host="127.0.0.1", port=smsc.port, system_id="acme", password="pw", system_type=node,
        binds=binds, reconnect_min=0.02, reconnect_max=0.05,
    )  # fmt: skip
    sink = RecordingSink()
    driver = SmppDriver("carrier", options, sink, SystemClock())
    driver.use_bind_slots(slots)
    return driver, sink


def _ended(smsc: SmscSimulator, node: str, event: str) -> int:
    return sum(1 for r in smsc.session_log if r.event == event and r.system_type == node)


async def test_revoked_slots_unbind_at_once_and_the_owed_receipt_goes_to_the_other_session(
    smsc: SmscSimulator,
) -> None:
    slots_a, slots_b = LocalSlots(1), LocalSlots(1)
    a, sink_a = _driver(smsc, "gw1", slots_a, binds=1)
    b, sink_b = _driver(smsc, "gw2", slots_b, binds=1)
    try:
        await a.start()
        await b.start()
        await sink_a.until(lambda: a.health().state is RouteState.UP)
        await sink_b.until(lambda: b.health().state is RouteState.UP)
        sent = await a.submit(OutboundSms("m1", "+12025550147", ("owed a receipt",), "gsm7"))

        slots_a.revoke(within=WAIT)  # the unbind is answered long before the hang-up
        await asyncio.wait_for(smsc.wait_until(lambda: _ended(smsc, "gw1", "unbound") == 1), WAIT)
        await sink_a.until(lambda: a.health().state is RouteState.DOWN)  # after the release
        assert slots_a.released == 1
        asks = slots_a.asks
        await asyncio.wait_for(slots_a.asks_beyond(asks + 2), WAIT)  # asked, refused, waits
        assert smsc.binds == 2 and _ended(smsc, "gw1", "lost") == 0

        assert isinstance(smsc.clock, FakeClock)
        smsc.clock.advance(smsc.config.receipt_delay)  # the carrier's receipt comes due
        await sink_b.until(lambda: len(sink_b.receipts) == 1)
        assert sink_b.receipts[0].carrier_id == sent.carrier_ids[0] and not sink_a.receipts

        slots_a.refusing = False  # the node rejoined: a slot again, and a bind
        await sink_a.until(lambda: a.health().state is RouteState.UP)
        assert smsc.binds == 3 and smsc.peak_sessions == 2 and smsc.already_bound == 0
    finally:
        await a.aclose()
        await b.aclose()


async def test_an_unanswered_unbind_is_hung_up_within_the_budget(smsc: SmscSimulator) -> None:
    slots = LocalSlots(2)
    a, sink = _driver(smsc, "gw1", slots, binds=2)
    try:
        await a.start()
        await sink.until(lambda: a.health().state is RouteState.UP)
        smsc.stop_answering()  # a carrier that reads nothing more
        slots.revoke(within=0.1)
        await sink.until(lambda: a.health().state is RouteState.DOWN)  # hung up, released
        assert slots.released == 2
        smsc.resume_answering()  # it reads now: each unbind, then its connection's end

        def ended() -> int:
            return _ended(smsc, "gw1", "unbound") + _ended(smsc, "gw1", "lost")

        await asyncio.wait_for(smsc.wait_until(lambda: ended() == 2), WAIT)
        assert smsc.binds == 2, [r.event for r in smsc.session_log]
    finally:
        smsc.resume_answering()
        await a.aclose()


async def test_a_link_revoked_while_it_binds_unbinds_once_bound(smsc: SmscSimulator) -> None:
    slots = LocalSlots(1)
    a, sink = _driver(smsc, "gw1", slots, binds=1)
    try:
        smsc.stop_answering()  # the bind waits unread: the slot is held, the link not bound
        await a.start()
        await asyncio.wait_for(smsc.wait_until(lambda: smsc.connections == 1), WAIT)
        slots.revoke(within=WAIT)
        smsc.resume_answering()
        await asyncio.wait_for(smsc.wait_until(lambda: _ended(smsc, "gw1", "unbound") == 1), WAIT)
        await sink.until(lambda: slots.released == 1 and a.health().state is RouteState.DOWN)
        asks = slots.asks
        await asyncio.wait_for(slots.asks_beyond(asks + 2), WAIT)
        assert smsc.binds == 1 and smsc.already_bound == 0
    finally:
        smsc.resume_answering()
        await a.aclose()
