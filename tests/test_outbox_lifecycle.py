"""The outbox's life around the sends: rows only for consumed event types, lanes that
give way to sends in flight, and a bounded grace to deliver what is pending at shutdown
(the rest after a restart). Consumers here are the outbox's contract only."""

from __future__ import annotations

import asyncio

import pytest

from drivers.base import InboundSms
from drivers.clock import FakeClock, SystemClock
from gateway import config as config_mod
from gateway.app import Gateway
from gateway.config import ConfigError, OutboxConfig
from gateway.integrations import outbox as outbox_mod
from gateway.integrations.events import (
    MESSAGE_INBOUND,
    MESSAGE_STATUS,
    DeliveryFailed,
    OutboxEvent,
)
from gateway.integrations.outbox import Outbox
from gateway.models import Priority
from gateway.store import outbox_sql
from gateway.store.store import NewMessage
from tests.conftest import CANARY_BODY, CANARY_NUMBER, GatewayFactory, accept
from tests.test_config import EXAMPLE
from tests.test_outbox import FAST, drive


class Recorder:
    """Takes the event types it is given; `gate` (when set) holds every delivery after
    the first `free` until it is opened."""

    wants_phi = False

    def __init__(self, types: frozenset[str], name: str = "probe", free: int = -1) -> None:
        self.name = name
        self.types = types
        self.delivered: list[str] = []
        self.free = free
        self.gate = asyncio.Event()
        self.changed = asyncio.Event()

    def accepts(self, event_type: str) -> bool:
        return event_type in self.types

    async def deliver(self, event: OutboxEvent) -> None:
        if 0 <= self.free <= len(self.delivered):
            await self.gate.wait()
        self.delivered.append(event.id)
        self.changed.set()

    async def wait_for(self, count: int) -> None:
        while len(self.delivered) < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)


async def make_events(gw: Gateway, count: int) -> None:
    for _ in range(count):
        await gw.store.cancel(await accept(gw), gw.clock.time())


async def outbox_count(gw: Gateway) -> int:
    row = await gw.store.reader.one("SELECT count(*) FROM outbox")
    assert row is not None
    return int(row[0])


async def test_no_consumer_writes_no_outbox_rows(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    await gw.scheduler.run_until_idle()
    await accept(gw)
    await gw.scheduler.run_until_idle()
    await gw.sink.inbound("main", InboundSms(sender=CANARY_NUMBER, body=CANARY_BODY))
    gw.sink.health_changed("main", gw.routes["main"].health())
    await gw.scheduler.run_until_idle()
    await make_events(gw, 2)
    assert await outbox_count(gw) == 0
    # The history the API reads is still written: only the outbox rows are skipped.
    events = await gw.store.reader.one("SELECT count(*) FROM message_events")
    assert events is not None and events[0] > 0


async def test_rows_only_for_the_types_some_consumer_takes(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(start=False)
    gw.outbox.register(Recorder(frozenset({MESSAGE_INBOUND})))
    await gw.start(dispatch=False)
    await make_events(gw, 2)  # status events: nobody takes them
    await gw.sink.inbound("main", InboundSms(sender=CANARY_NUMBER, body=CANARY_BODY))
    rows = await gw.outbox.repo.after(0, 100)
    assert [r.type for r in rows] == [MESSAGE_INBOUND]
    await gw.stop()
    # Next start with a status consumer too: status rows are written again.
    again = await open_gateway(start=False)
    again.outbox.register(Recorder(frozenset({MESSAGE_STATUS})))
    await again.start(dispatch=False)
    await make_events(again, 1)
    assert [r.type for r in await again.outbox.repo.after(rows[-1].seq, 100)] == [MESSAGE_STATUS]


async def test_an_accept_builds_no_status_row_that_no_consumer_takes(
    open_gateway: GatewayFactory,
) -> None:
    """The store leaves out, as it builds an accept's rows, a status row that the
    trigger would drop (the policy's holds and blocks are on the hot path); with a
    consumer of status events the row is there."""
    blocked = NewMessage(
        id="m1",
        token_id=None,
        priority=Priority.NORMAL,
        to=CANARY_NUMBER,
        body=CANARY_BODY,
        encoding="gsm7",
        segments=1,
        created_at=1.0,
        expires_at=9.0,
        blocked="opted_out",
    )
    gw = await open_gateway(start=False)
    gw.outbox.register(Recorder(frozenset({MESSAGE_INBOUND})))
    await gw.start(dispatch=False)
    assert [sql for sql, _ in gw.store.insert_statements(blocked)][1:] == []
    await gw.stop()
    again = await open_gateway(start=False)
    again.outbox.register(Recorder(frozenset({MESSAGE_STATUS})))
    await again.start(dispatch=False)
    rows = again.store.insert_statements(blocked)
    assert rows[1:] == [
        (outbox_sql.INSERT_ROW, (MESSAGE_STATUS, 1.0, "m1", None, "blocked", "opted_out", 0))
    ]


async def test_lane_gives_way_while_sends_are_in_flight(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(start=False)
    in_flight = True
    config = OutboxConfig(debounce=0.0, yield_to_sends=1.0)
    outbox = Outbox(gw.store, config, clock, busy=lambda: in_flight)
    consumer = Recorder(frozenset({MESSAGE_STATUS}))
    outbox.register(consumer)
    await gw.start(dispatch=False)
    # As `start` will, before the events, so that the lane finds them all at its start.
    await outbox.repo.keep_only({MESSAGE_STATUS})
    await outbox.repo.join(["probe"])
    await make_events(gw, outbox_mod.BUSY_BATCH + 10)
    await outbox.start()
    try:
        # The first batch runs (no batch ran within the last second), a small one.
        await consumer.wait_for(outbox_mod.BUSY_BATCH)
        await clock.wait_sleeping(1)  # the lane waits for the sends to pause
        assert len(consumer.delivered) == outbox_mod.BUSY_BATCH
        clock.advance(0.5)
        await clock.wait_sleeping(1)
        assert len(consumer.delivered) == outbox_mod.BUSY_BATCH  # still held back
        in_flight = False  # the sends pause: the rest goes at once
        clock.advance(outbox_mod.BUSY_POLL)
        await consumer.wait_for(outbox_mod.BUSY_BATCH + 10)
        rows = await gw.outbox.repo.after(0, 1000)
        assert consumer.delivered == [r.id for r in rows]  # in order, each once
    finally:
        await outbox.stop()


async def test_shutdown_grace_delivers_what_is_pending(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    consumer = Recorder(frozenset({MESSAGE_STATUS}))
    outbox = Outbox(gw.store, OutboxConfig(debounce=0.0), SystemClock())
    outbox.register(consumer)
    await outbox.start()
    await make_events(gw, 5)
    await outbox.stop(grace=30.0)  # returns as soon as the lane has caught up
    rows = await gw.outbox.repo.after(0, 100)
    assert consumer.delivered == [r.id for r in rows]
    position = await gw.store.reader.one(
        "SELECT position FROM outbox_consumers WHERE name = 'probe'"
    )
    assert position is not None and position[0] == rows[-1].seq


async def test_shutdown_grace_is_bounded_and_the_rest_goes_after_restart(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    stuck = Recorder(frozenset({MESSAGE_STATUS}), free=2)  # the third delivery hangs
    outbox = Outbox(gw.store, OutboxConfig(debounce=0.0), SystemClock())
    outbox.register(stuck)
    await outbox.start()
    await make_events(gw, 5)
    await stuck.wait_for(2)
    await outbox.stop(grace=0.2)  # the hung delivery is cut off after the grace
    rows = await gw.outbox.repo.after(0, 100)
    assert stuck.delivered == [r.id for r in rows[:2]]
    # After a restart, a working consumer of the same name gets the rest, in order.
    fresh = Recorder(frozenset({MESSAGE_STATUS}))
    again = Outbox(gw.store, OutboxConfig(debounce=0.0), SystemClock())
    again.register(fresh)
    await again.start()
    try:
        await fresh.wait_for(3)
        assert fresh.delivered == [r.id for r in rows[2:]]
    finally:
        await again.stop()


@pytest.mark.parametrize("key", ["yield_to_sends", "shutdown_grace"])
def test_the_new_keys_are_documented_and_checked(key: str) -> None:
    assert f"{key} =" in EXAMPLE.read_text().split("[outbox]", 1)[1]
    with pytest.raises(ConfigError, match=f"^outbox.{key}: expected a number from 0"):
        config_mod.from_mapping({"outbox": {key: -1}})


class RefusesSome(Recorder):
    """Refuses every event of the messages in `refused` (a receiver that chokes on them)."""

    def __init__(self) -> None:
        super().__init__(frozenset({MESSAGE_STATUS}))
        self.refused: set[str] = set()
        self.tries: list[str] = []

    async def deliver(self, event: OutboxEvent) -> None:
        self.tries.append(event.id)
        if event.message_id in self.refused:
            raise DeliveryFailed("probe_refused")
        await super().deliver(event)


async def two_messages(gw: Gateway) -> tuple[str, str]:
    """Two messages with two status events each (sending, sent), interleaved or not."""
    first, second = await accept(gw), await accept(gw)
    await gw.scheduler.run_until_idle()
    return first, second


async def stored_position(gw: Gateway, name: str) -> int:
    row = await gw.store.reader.one("SELECT position FROM outbox_consumers WHERE name = ?", (name,))
    assert row is not None
    return int(row[0])


async def test_a_failing_message_holds_only_its_own_events(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(outbox=FAST, start=False)
    consumer = RefusesSome()
    gw.outbox.register(consumer)
    await gw.start(dispatch=False)
    stuck, fine = await two_messages(gw)
    consumer.refused.add(stuck)
    rows = await gw.outbox.repo.after(0, 100)
    ids = {m: [r.id for r in rows if r.message_id == m] for m in (stuck, fine)}
    asleep = clock.sleeping  # the gateway's own loops (campaigns, analytics...) on this clock
    lane = asyncio.create_task(gw.outbox.run_once("probe"))
    await consumer.wait_for(2)  # the other message's events go on...
    await clock.wait_sleeping(asleep + 1)  # ...while the stuck one waits out its back-off
    assert consumer.delivered == ids[fine]
    assert ids[stuck][1] not in consumer.tries  # held behind its message's first event
    first_stuck = next(r.seq for r in rows if r.message_id == stuck)
    assert await stored_position(gw, "probe") == first_stuck - 1  # held events keep it back
    consumer.refused.clear()  # the receiver takes it again
    await drive(clock, lane)
    assert consumer.delivered == ids[fine] + ids[stuck]  # each once; in order per message
    assert await stored_position(gw, "probe") == rows[-1].seq


async def test_held_events_go_after_a_restart_in_order_and_the_rest_not_again(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway()
    consumer = RefusesSome()
    outbox = Outbox(gw.store, OutboxConfig(**FAST), clock)
    outbox.register(consumer)
    await outbox.start(run=False)
    stuck, fine = await two_messages(gw)
    consumer.refused.add(stuck)
    asleep = clock.sleeping  # the gateway's own loops (campaigns, analytics...) on this clock
    lane = asyncio.create_task(outbox.run_once("probe"))
    await consumer.wait_for(2)
    await clock.wait_sleeping(asleep + 1)  # the lane, in the stuck one's back-off
    lane.cancel()
    await asyncio.gather(lane, return_exceptions=True)
    await outbox.stop()  # the process ends with the stuck message held
    rows = await gw.outbox.repo.after(0, 100)
    again = RefusesSome()
    restarted = Outbox(gw.store, OutboxConfig(**FAST), clock)
    restarted.register(again)
    await restarted.start(run=False)
    await drive(clock, asyncio.create_task(restarted.run_once("probe")))
    # The route's receipts may add events while the lane drives: only the held ones
    # of those stored at the stop go again.
    stored = {r.id for r in rows}
    assert [e for e in again.delivered if e in stored] == [
        r.id for r in rows if r.message_id == stuck
    ]
    assert consumer.delivered == [r.id for r in rows if r.message_id == fine]
