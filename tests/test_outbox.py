"""The outbox: events committed with their changes, delivered in order, at least once,
to real receivers on loopback (signatures checked with `standardwebhooks`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from drivers.base import InboundSms
from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.integrations.events import (
    MESSAGE_INBOUND,
    MESSAGE_STATUS,
    ROUTE_HEALTH,
    DeliveryFailed,
    OutboxEvent,
)
from gateway.store import outbox_sql
from tests import webhook_rig
from tests.conftest import CANARY_BODY, CANARY_NUMBER, GatewayFactory, accept, settle_receipts
from tests.webhook_rig import write_secret

FAST = {"backoff_initial": 1.0, "backoff_max": 8.0, "retry_for": 60.0}


def hook(name: str, url: str, secret: Path, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "url": url,
        "secret_file": str(secret),
        "allow_loopback": True,
        "allow_plain_http": True,
        "timeout": 2.0,
        "events": ["message.status"],
        **extra,
    }


receivers = webhook_rig.receivers  # the fixture


async def outbox_rows(gw: Gateway, kind: str | None = None) -> list[outbox_sql.OutboxRow]:
    rows = await gw.outbox.repo.after(0, 1000)
    return [r for r in rows if kind is None or r.type == kind]


async def drive(clock: FakeClock, task: asyncio.Task[Any]) -> Any:
    """Run a lane's `run_once` to its end, moving the fake clock over each back-off."""
    while not task.done():
        sleeper = asyncio.ensure_future(clock.wait_sleeping(1))
        await asyncio.wait({task, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        if not sleeper.done():
            sleeper.cancel()
            continue
        deadline = clock.next_deadline
        clock.advance(max(deadline or 0.0, 0.0))
    return task.result()


class TakesAll:
    """A consumer of every event type, so that the store writes them all."""

    name = "all"
    wants_phi = False

    def accepts(self, event_type: str) -> bool:
        return True

    async def deliver(self, event: OutboxEvent) -> None:
        return None


async def consumed(open_gateway: GatewayFactory) -> Gateway:
    gw = await open_gateway(start=False)
    gw.outbox.register(TakesAll())
    await gw.start(dispatch=False)
    return gw


async def test_each_change_commits_with_its_outbox_row(open_gateway: GatewayFactory) -> None:
    gw = await consumed(open_gateway)
    message_id = await accept(gw)
    await gw.scheduler.run_until_idle()
    await gw.sink.inbound("main", InboundSms(sender=CANARY_NUMBER, body=CANARY_BODY))
    gw.sink.health_changed("main", gw.routes["main"].health())
    await gw.scheduler.run_until_idle()  # the round that notes health changes
    rows = await outbox_rows(gw)
    status = [r for r in rows if r.type == MESSAGE_STATUS]
    assert [(r.message_id, r.state) for r in status] == [
        (message_id, "sending"),
        (message_id, "sent"),
    ]
    events = await gw.store.reader.all(
        "SELECT state, at FROM message_events WHERE message_id = ? ORDER BY seq", (message_id,)
    )
    assert [(e[0], e[1]) for e in events] == [(r.state, r.at) for r in status]
    assert [r.type for r in rows if r.type == MESSAGE_INBOUND] == [MESSAGE_INBOUND]
    assert [(r.route, r.state) for r in rows if r.type == ROUTE_HEALTH] == [("main", "up")]
    # Ids and codes only: no number, no text in the outbox.
    dump = await gw.store.reader.all("SELECT * FROM outbox")
    assert CANARY_NUMBER not in repr([tuple(r) for r in dump])
    assert CANARY_BODY not in repr([tuple(r) for r in dump])
    assert len({r.id for r in rows}) == len(rows)


async def test_rolled_back_change_leaves_no_event(open_gateway: GatewayFactory) -> None:
    gw = await consumed(open_gateway)
    message_id = await accept(gw)
    await gw.store.cancel(message_id, gw.clock.time())
    before = await outbox_rows(gw)
    assert [r.state for r in before] == ["cancelled"]
    # Cancelling again is refused (already final): no second event.
    await gw.store.cancel(message_id, gw.clock.time())
    assert len(await outbox_rows(gw)) == 1


async def test_event_committed_before_a_crash_is_delivered_after_restart(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx = await receivers(secret)
    webhooks = [hook("rx", rx.url, path)]
    gw = await open_gateway(webhooks=webhooks, outbox=FAST)
    message_id = await accept(gw)
    await gw.scheduler.run_until_idle()  # sending, sent: committed, never delivered
    await gw.stop()
    assert rx.requests == 0
    again = await open_gateway(webhooks=webhooks, outbox=FAST)
    assert await again.outbox.run_once("webhook:rx")
    await rx.wait_for(2)
    assert [e["body"]["data"]["state"] for e in rx.events] == ["sending", "sent"]
    assert {e["body"]["data"]["message_id"] for e in rx.events} == {message_id}
    assert rx.bad_signatures == 0


async def test_outage_then_every_event_exactly_once_in_order(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any, clock: FakeClock
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx = await receivers(secret, "500")
    gw = await open_gateway(webhooks=[hook("rx", rx.url, path)], outbox=FAST)
    ids = [await accept(gw, body=f"n{i}") for i in range(5)]
    await gw.scheduler.run_until_idle()
    clock.advance(5.0)  # the loopback route's receipts: delivered before the lane runs
    await settle_receipts(gw)
    lane = asyncio.create_task(gw.outbox.run_once("webhook:rx"))
    while rx.requests < 3:  # the first event, retried through the outage
        await clock.wait_sleeping(1)
        clock.advance(clock.next_deadline or 0.0)
    await clock.wait_sleeping(1)
    first = (await outbox_rows(gw, MESSAGE_STATUS))[0]
    attempt = await gw.outbox.repo.attempt("webhook:rx", first.seq)
    assert attempt is not None and attempt.state == "pending" and attempt.reason == "http_500"
    rx.mode = "ok"  # the receiver is back
    await drive(clock, lane)
    rows = await outbox_rows(gw, MESSAGE_STATUS)
    # Once each; in order per message (a failing message holds only its own events).
    assert sorted(e["id"] for e in rx.events) == sorted(r.id for r in rows)
    for message_id in ids:
        states = [
            e["body"]["data"]["state"]
            for e in rx.events
            if e["body"]["data"]["message_id"] == message_id
        ]
        assert states == ["sending", "sent", "delivered"]
    # Nothing delivered twice after a restart either.
    await gw.stop()
    again = await open_gateway(webhooks=[hook("rx", rx.url, path)], outbox=FAST)
    assert not await again.outbox.run_once("webhook:rx")
    assert len(rx.events) == len(rows)


async def test_backoff_grows_with_full_jitter_then_dead_letter(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any, clock: FakeClock
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx = await receivers(secret, "500")
    gw = await open_gateway(webhooks=[hook("rx", rx.url, path)], outbox=FAST)
    ceilings: list[float] = []

    def jitter(ceiling: float) -> float:
        ceilings.append(ceiling)
        return ceiling  # the top of the range: the longest wait full jitter allows

    gw.outbox.jitter = jitter  # a chosen draw, as a seeded random one would be
    await gw.store.cancel(await accept(gw), clock.time())
    await drive(clock, asyncio.create_task(gw.outbox.run_once("webhook:rx")))
    assert ceilings[:4] == [1.0, 2.0, 4.0, 8.0] and set(ceilings[4:]) <= {8.0}
    dead = await gw.outbox.repo.recent(10, state=outbox_sql.DEAD)
    assert len(dead) == 1 and dead[0].reason == "http_500"
    assert dead[0].last_at - dead[0].first_at >= FAST["retry_for"]
    # The dead letter moved the lane on: the next event goes out once the receiver is up.
    rx.mode = "ok"
    await gw.store.cancel(await accept(gw), clock.time())
    await gw.outbox.run_once("webhook:rx")
    assert len(rx.events) == 1
    # An admin redelivers the dead one; twice pressed, it is queued once.
    assert await gw.outbox.redeliver("webhook:rx", dead[0].seq)
    assert not await gw.outbox.redeliver("webhook:rx", dead[0].seq)
    await gw.outbox.run_once("webhook:rx")
    assert [e["id"] for e in rx.events][-1] == dead[0].event_id
    assert await gw.outbox.repo.recent(10, state=outbox_sql.DEAD) == []


async def test_delivered_history_is_pruned_after_retention(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any, clock: FakeClock
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx = await receivers(secret)
    gw = await open_gateway(
        webhooks=[hook("rx", rx.url, path)], outbox={**FAST, "retention_days": 1.0}
    )
    for _ in range(3):
        await gw.store.cancel(await accept(gw), clock.time())
    await gw.outbox.run_once("webhook:rx")
    await gw.outbox.run_once("callback:rx")
    assert len(rx.events) == 3
    clock.advance(86400 + 1)
    await gw.outbox.prune_once()
    rows = await outbox_rows(gw)
    assert len(rows) == 1  # the newest stays, so event sequence numbers never go back
    assert await gw.outbox.repo.recent(10) == []
    await gw.store.cancel(await accept(gw), clock.time())
    assert (await outbox_rows(gw))[-1].seq > rows[0].seq


class FailsOnce:
    """A consumer that refuses the third event once (the outbox's contract only)."""

    name = "probe"
    wants_phi = False

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.refused = False

    def accepts(self, event_type: str) -> bool:
        return event_type == MESSAGE_STATUS

    async def deliver(self, event: OutboxEvent) -> None:
        if len(self.delivered) == 2 and not self.refused:
            self.refused = True
            raise DeliveryFailed("probe_refused")
        self.delivered.append(event.id)


async def test_first_try_deliveries_are_recorded_before_a_retry_waits(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """First-try deliveries are written together at the end of a batch; a failure
    writes them first, so a long back-off never holds delivered events unrecorded."""
    gw = await open_gateway(outbox=FAST, start=False)
    consumer = FailsOnce()
    gw.outbox.register(consumer)
    await gw.start(dispatch=False)
    for _ in range(3):
        await gw.store.cancel(await accept(gw), clock.time())
    rows = await outbox_rows(gw, MESSAGE_STATUS)
    lane = asyncio.create_task(gw.outbox.run_once("probe"))
    await clock.wait_sleeping(1)  # the third event's back-off
    for row in rows[:2]:
        attempt = await gw.outbox.repo.attempt("probe", row.seq)
        assert attempt is not None and attempt.state == outbox_sql.DELIVERED
    position = await gw.store.reader.one(
        "SELECT position FROM outbox_consumers WHERE name = 'probe'"
    )
    assert position is not None and position[0] == rows[1].seq
    await drive(clock, lane)
    assert consumer.delivered == [r.id for r in rows]
