"""The outbox's own store work, batched per round (issue 16, point 2): a lane's round
reads its rows and their earlier attempts in one statement, looks for redeliveries only
when one may be due (tests/test_outbox.py and test_admin_webhooks.py redeliver after
such rounds), reads an endpoint's personal fields once per batch (not per
event), and records the batch's deliveries in one write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drivers.base import InboundSms
from gateway.app import Gateway
from gateway.integrations.events import MESSAGE_INBOUND, MESSAGE_STATUS
from tests import webhook_rig
from tests.conftest import CANARY_BODY, CANARY_NUMBER, GatewayFactory, accept
from tests.test_outbox import FAST, hook, outbox_rows
from tests.webhook_rig import Receiver, write_secret

receivers = webhook_rig.receivers  # the fixture


async def traced_round(gw: Gateway, lane: str) -> list[str]:
    """The statements the reader connections ran during one round of `lane`."""
    statements: list[str] = []
    for conn in gw.store.reader._all:  # every reader connection, traced
        await conn.set_trace_callback(statements.append)
    try:
        await gw.outbox.run_once(lane)
    finally:
        for conn in gw.store.reader._all:
            await conn.set_trace_callback(None)
    return statements


async def test_a_round_reads_its_rows_and_attempts_in_one_statement(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret)
    gw = await open_gateway(webhooks=[hook("rx", rx.url, path)], outbox=FAST)
    for _ in range(5):
        await accept(gw)
    await gw.scheduler.run_until_idle()
    await gw.outbox.run_once("webhook:rx")  # the first round also looks for redeliveries
    assert len(rx.events) == 10
    for _ in range(5):
        await accept(gw)
    await gw.scheduler.run_until_idle()
    statements = await traced_round(gw, "webhook:rx")
    assert len(rx.events) == 20
    assert len([s for s in statements if "outbox" in s]) == 1, statements


async def test_personal_fields_are_read_once_per_batch(
    tmp_path: Path, open_gateway: GatewayFactory, receivers: Any
) -> None:
    path, secret = write_secret(tmp_path, "rx")
    rx: Receiver = await receivers(secret)
    events = ["message.status", "message.inbound"]
    gw = await open_gateway(
        webhooks=[hook("rx", rx.url, path, phi=True, events=events)], outbox=FAST
    )
    await gw.outbox.run_once("webhook:rx")
    for _ in range(4):
        await accept(gw, body=CANARY_BODY)
        await gw.sink.inbound("main", InboundSms(sender=CANARY_NUMBER, body=CANARY_BODY))
    await gw.scheduler.run_until_idle()
    statuses = await outbox_rows(gw, MESSAGE_STATUS)
    statements = await traced_round(gw, "webhook:rx")
    assert len([s for s in statements if "FROM messages" in s]) == 1, statements
    assert len([s for s in statements if "FROM inbound" in s]) == 1, statements
    assert len(rx.events) == len(statuses) + 4
    for e in rx.events:
        data = e["body"]["data"]
        if e["body"]["type"] == MESSAGE_INBOUND:
            assert data["from"] == CANARY_NUMBER and data["text"] == CANARY_BODY
        else:
            assert data["to"] == CANARY_NUMBER and data["body"] == CANARY_BODY
