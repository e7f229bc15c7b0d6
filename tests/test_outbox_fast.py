"""Webhook delivery fast enough for receipts (issue 16, point 2), against real receivers
on loopback: one endpoint delivers several events at once with each message's events
in order, an endpoint can ask for some message states only (no outbox row is written
for a state nobody takes), and the callback lane reads no message row per event."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.config import ConfigError
from gateway.integrations.events import MESSAGE_STATUS
from tests import webhook_rig
from tests.conftest import GatewayFactory, accept, make_config, settle_receipts
from tests.test_config import EXAMPLE
from tests.test_outbox import FAST, hook, outbox_rows
from tests.webhook_rig import Receiver, write_secret

receivers = webhook_rig.receivers  # the fixture
FINAL = ["delivered", "failed", "expired"]
PATIENT = 30.0  # a held answer must not time out while the test looks at the others


def states_by_message(rx: Receiver) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {}
    for e in rx.events:
        got.setdefault(e["body"]["data"]["message_id"], []).append(e["body"]["data"]["state"])
    return got


async def stored_position(gw: Gateway, name: str) -> int:
    row = await gw.store.reader.one("SELECT position FROM outbox_consumers WHERE name = ?", (name,))
    assert row is not None
    return int(row[0])


async def test_one_endpoint_delivers_other_messages_while_one_answer_is_slow(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret)
    endpoint = hook("rx", rx.url, path, concurrency=4, timeout=PATIENT)
    gw = await open_gateway(webhooks=[endpoint], outbox=FAST)
    slow, *others = [await accept(gw) for _ in range(5)]
    await gw.scheduler.run_until_idle()  # sending, sent for each
    rows = await outbox_rows(gw, MESSAGE_STATUS)
    first_slow = next(r for r in rows if r.message_id == slow)
    assert first_slow.seq == rows[0].seq  # the first event of the lane is the slow one
    rx.hold.add(first_slow.id)
    lane = asyncio.create_task(gw.outbox.run_once("webhook:rx"))
    # Every other message's events arrive while the slow one's first answer is pending...
    await rx.wait_for(len(rows) - 2)
    assert set(states_by_message(rx)) == set(others)
    await rx.wait_for(len(rows) - 1, requests=True)
    # ...and its second event waits for that answer: order per message.
    assert rx.requests == len(rows) - 1
    assert await stored_position(gw, "webhook:rx") < first_slow.seq
    rx.release()
    await asyncio.wait_for(lane, PATIENT)
    assert states_by_message(rx) == {m: ["sending", "sent"] for m in [slow, *others]}
    assert sorted(e["id"] for e in rx.events) == sorted(r.id for r in rows)
    assert await stored_position(gw, "webhook:rx") == rows[-1].seq
    assert len(rx.peers) <= 4  # connections kept alive and reused, at most one per slot
    assert rx.bad_signatures == 0


async def test_stopped_with_an_answer_pending_only_that_message_goes_again(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret)
    endpoint = hook("rx", rx.url, path, concurrency=4, timeout=PATIENT)
    gw = await open_gateway(webhooks=[endpoint], outbox=FAST)
    slow, *others = [await accept(gw) for _ in range(3)]
    await gw.scheduler.run_until_idle()
    rows = await outbox_rows(gw, MESSAGE_STATUS)
    rx.hold.add(next(r.id for r in rows if r.message_id == slow))
    lane = asyncio.create_task(gw.outbox.run_once("webhook:rx"))
    await rx.wait_for(len(rows) - 2)
    lane.cancel()  # the process stops with the slow answer pending
    await asyncio.gather(lane, return_exceptions=True)
    await gw.stop()
    rx.release()
    assert set(states_by_message(rx)) == set(others)
    before = len(rx.events)
    again = await open_gateway(webhooks=[endpoint], outbox=FAST)
    await again.outbox.run_once("webhook:rx")
    # Only what was not delivered goes again: the slow message's events, in order.
    stored = {r.id for r in rows}
    redelivered = [e for e in rx.events[before:] if e["id"] in stored]
    assert [e["id"] for e in redelivered] == [r.id for r in rows if r.message_id == slow]
    assert await stored_position(again, "webhook:rx") >= rows[-1].seq


async def delivered_messages(gw: Gateway, clock: FakeClock, count: int) -> list[str]:
    ids = [await accept(gw) for _ in range(count)]
    await gw.scheduler.run_until_idle()
    clock.advance(5.0)  # the loopback route's receipts
    await settle_receipts(gw)
    return ids


async def test_states_filter_writes_no_row_for_a_state_nobody_takes(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any, clock: FakeClock
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret)
    gw = await open_gateway(webhooks=[hook("rx", rx.url, path, states=FINAL)], outbox=FAST)
    ids = await delivered_messages(gw, clock, 2)
    rows = await outbox_rows(gw)
    assert sorted((r.message_id, r.state) for r in rows) == sorted((m, "delivered") for m in ids)
    # The history the API reads keeps every state.
    history = await gw.store.reader.all(
        "SELECT state FROM message_events WHERE message_id = ? ORDER BY seq", (ids[0],)
    )
    assert [h[0] for h in history] == ["sending", "sent", "delivered"]
    await gw.outbox.run_once("webhook:rx")
    await gw.outbox.run_once("callback:rx")
    assert states_by_message(rx) == {m: ["delivered"] for m in ids}


async def test_states_filter_is_per_endpoint(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any, clock: FakeClock
) -> None:
    all_path, all_secret = write_secret(tmp_path, "all")
    final_path, final_secret = write_secret(tmp_path, "final")
    everything: Receiver = await receivers(all_secret)
    final: Receiver = await receivers(final_secret)
    webhooks = [
        hook("all", everything.url, all_path),
        hook("final", final.url, final_path, states=FINAL),
    ]
    gw = await open_gateway(webhooks=webhooks, outbox=FAST)
    ids = await delivered_messages(gw, clock, 2)
    assert len(await outbox_rows(gw)) == 6  # one endpoint takes every state
    for name in ("webhook:all", "webhook:final"):
        await gw.outbox.run_once(name)
    assert states_by_message(everything) == {m: ["sending", "sent", "delivered"] for m in ids}
    assert states_by_message(final) == {m: ["delivered"] for m in ids}
    assert await stored_position(gw, "webhook:final") == (await outbox_rows(gw))[-1].seq


def test_states_and_concurrency_are_checked_at_load(tmp_path: Path) -> None:
    good = hook("x", "https://10.1.2.3/", tmp_path / "s")
    make_config(tmp_path, webhooks=[{**good, "states": FINAL, "concurrency": 32}])
    with pytest.raises(ConfigError, match=r"^webhooks\[0\]\.states"):
        make_config(tmp_path, webhooks=[{**good, "states": ["delivred"]}])
    with pytest.raises(ConfigError, match=r"^webhooks\[0\]\.states: name at least one"):
        make_config(tmp_path, webhooks=[{**good, "states": []}])
    with pytest.raises(ConfigError, match=r"^webhooks\[0\]\.concurrency"):
        make_config(tmp_path, webhooks=[{**good, "concurrency": 0}])


@pytest.mark.parametrize("key", ["states", "concurrency"])
def test_the_endpoint_keys_are_documented(key: str) -> None:
    block = EXAMPLE.read_text().split("# [[webhooks]]", 1)[1].split("\n\n", 1)[0]
    assert f"# {key} =" in block


async def test_callbacks_read_no_message_row_per_event_without_a_callback_url(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret)
    gw = await open_gateway(
        webhooks=[hook("rx", rx.url, path, events=["route.health"])], outbox=FAST
    )
    for _ in range(6):
        await accept(gw)  # no callback_url
    await gw.scheduler.run_until_idle()
    assert len(await outbox_rows(gw, MESSAGE_STATUS)) == 12
    statements: list[str] = []
    for conn in gw.store.reader._all:  # every reader connection, traced
        await conn.set_trace_callback(statements.append)
    await gw.outbox.run_once("callback:rx")
    for conn in gw.store.reader._all:
        await conn.set_trace_callback(None)
    message_reads = [s for s in statements if "FROM messages" in s]
    # One look-up for the whole batch, not one per event; nothing is sent.
    assert len(message_reads) <= 1
    assert rx.requests == 0


async def test_callbacks_get_the_endpoint_states_only(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any, clock: FakeClock
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret)
    endpoint = hook("rx", rx.url, path, events=["route.health"], states=FINAL)
    gw = await open_gateway(webhooks=[endpoint], outbox=FAST)
    asked = await accept(gw, callback_url=rx.url.removesuffix("/hook") + "/callbacks/ehr")
    await accept(gw)  # no callback: nothing for it
    await gw.scheduler.run_until_idle()
    clock.advance(5.0)
    await settle_receipts(gw)
    await gw.outbox.run_once("callback:rx")
    assert [(e["path"], e["body"]["data"]["state"]) for e in rx.events] == [
        ("/callbacks/ehr", "delivered")
    ]
    assert rx.events[0]["body"]["data"]["message_id"] == asked
