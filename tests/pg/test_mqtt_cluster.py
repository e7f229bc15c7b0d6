"""MQTT on a two-node cluster (issue 18 pt 1/5): two gateways on one PostgreSQL and one
real mosquitto, both subscribed to the send topic and both running the outbox's lanes.

Each send posted to the send topic is accepted once across the nodes (the broker hands
it to one member of the shared subscription), each status event of those messages is
published once (by the node leading the shared outbox's MQTT lane), and both nodes stay
connected under their own client ids, each saying online on its own status topic; a
node that stops says offline there and leaves the other's word alone.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.clock import SystemClock
from gateway.app import Gateway
from gateway.config import Config, from_mapping
from gateway.integrations.mqtt import MqttLink
from gateway.store import crypto
from gateway.tokens import create_token
from tests.conftest import CANARY_BODY, CANARY_DIGITS, TEST_CONSENT, TEST_LAZY_COMMIT_MS
from tests.peers.mosquitto import Mosquitto, binary

pytestmark = pytest.mark.skipif(binary("mosquitto") is None, reason="make peers installs it")

WAIT = 20.0
SENDS = 8
REPLIES = "client/replies"


def _config(data: Path, name: str, dsn: str, port: int) -> Config:
    data.mkdir(exist_ok=True)
    return from_mapping(
        {
            "data_dir": str(data),
            # No receipt while the test runs: "sent" is each message's last event here.
            "routes": [{"name": "main", "type": "loopback", "receipt_delay": 600.0}],
            "http": {"shutdown_grace": 1.0},
            "consent": TEST_CONSENT,
            "store": {"lazy_commit_ms": TEST_LAZY_COMMIT_MS},
            "outbox": {"debounce": 0, "yield_to_sends": 0, "shutdown_grace": 0.5},
            "mqtt": {
                "enabled": True,
                "port": port,
                "topic_prefix": "hosp",
                "send_topic": True,
                "send_token_file": "mqtt.token",
            },
            "source": str(data / "smsgw.toml"),
            "cluster": {"enabled": True, "node_id": name, "conninfo": dsn, "lease_seconds": 600},
        }
    )


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    directory = tmp_path / "broker"
    directory.mkdir()
    b = Mosquitto(directory)
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
async def nodes(tmp_path: Path, pg_dsn: str, broker: Mosquitto) -> AsyncIterator[list[Gateway]]:
    """gw1 and gw2 running (every loop on), one keyring and one send token."""
    opened: list[Gateway] = []
    try:
        first = _config(tmp_path / "gw1", "gw1", pg_dsn, broker.port)
        crypto.generate_master_key(first.master_key_path)
        gw1 = await Gateway.open(first, SystemClock())
        opened.append(gw1)
        assert gw1.cluster is not None
        token = await create_token(gw1.store, "mqtt", frozenset({"send"}), gw1.clock)
        await gw1.cluster.tokens.copy_local(gw1.store.reader)
        (tmp_path / "gw1" / "mqtt.token").write_text(token.text + "\n")
        shutil.copytree(tmp_path / "gw1", tmp_path / "gw2")
        second = _config(tmp_path / "gw2", "gw2", pg_dsn, broker.port)
        opened.append(await Gateway.open(second, SystemClock()))
        for gw in opened:
            await gw.start()
        async with asyncio.timeout(WAIT):
            for gw in opened:
                await _link(gw).wait_connected()
        yield opened
    finally:
        for gw in opened:
            if not gw.stopped:
                await gw.stop()


def _link(gw: Gateway) -> MqttLink:
    assert gw.mqtt is not None
    return gw.mqtt


def _accepted(gw: Gateway) -> float:
    value = gw.metrics.registry.get_sample_value(
        "smsgw_mqtt_sends_received_total", {"outcome": "accepted"}
    )
    return value or 0.0


async def _rows(gw: Gateway, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    assert gw.cluster is not None
    async with gw.cluster.queue.pool.connection() as conn:
        return list(await (await conn.execute(sql.encode(), args)).fetchall())


async def _published_events(gw: Gateway, ids: list[str]) -> dict[int, str]:
    """seq -> message id of the outbox rows of `ids` published to the lanes so far."""
    rows = await _rows(
        gw,
        "SELECT seq, message_id FROM outbox WHERE message_id = ANY(%s) AND seq IS NOT NULL",
        ids,
    )
    return {int(seq): str(message_id) for seq, message_id in rows}


def _client(port: int) -> aiomqtt.Client:
    return aiomqtt.Client("127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5)


async def test_each_send_is_accepted_once_and_each_event_published_once(
    nodes: list[Gateway], broker: Mosquitto
) -> None:
    async with _client(broker.port) as client:
        await client.subscribe(REPLIES, qos=1)
        await client.subscribe("hosp/messages/#", qos=1)
        for n in range(SENDS):
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = REPLIES
            props.CorrelationData = f"req-{n}".encode()
            body = {"to": f"+4915112345{n:03d}", "body": CANARY_BODY}
            await client.publish("hosp/send", json.dumps(body).encode(), qos=1, properties=props)
        answered: list[bytes] = []
        ids: list[str] = []
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(WAIT):
            async for message in client.messages:
                if str(message.topic) == REPLIES:
                    assert message.properties is not None
                    assert ("status", "202") in message.properties.UserProperty
                    answered.append(message.properties.CorrelationData)
                    ids.append(json.loads(bytes(message.payload))["id"])
                else:
                    text = bytes(message.payload).decode()
                    assert CANARY_DIGITS not in text and CANARY_BODY not in text
                    events.append(json.loads(text))
                if len(answered) < SENDS or {
                    e["message_id"] for e in events if e["data"]["state"] == "sent"
                } != set(ids):
                    continue
                if {e["seq"] for e in events} == set(await _published_events(nodes[0], ids)):
                    break
    # Each request answered once, by one node or the other: the broker shared them out.
    assert sorted(answered) == sorted(f"req-{n}".encode() for n in range(SENDS))
    assert len(set(ids)) == SENDS
    (count,) = await _rows(nodes[0], "SELECT count(*) FROM messages")
    assert count == (SENDS,)
    per_node = [_accepted(gw) for gw in nodes]
    assert sum(per_node) == SENDS and min(per_node) > 0, per_node
    # Each event once, from the one node leading the MQTT lane.
    assert len({e["id"] for e in events}) == len(events), Counter(e["id"] for e in events)
    delivered = [
        next(d for name, _, _, d, _ in gw.outbox.lanes_state(0) if name == "mqtt") for gw in nodes
    ]
    # (The leader also published the routes' health, on their own topics.)
    assert min(delivered) == 0 and max(delivered) >= len(events), delivered
    # A repeat under an idempotency key, on the other node: the first answer again.
    await _send_twice_under_one_key(nodes, broker)


async def _send_twice_under_one_key(nodes: list[Gateway], broker: Mosquitto) -> None:
    """The key's answer is in PostgreSQL: the broker hands the repeat to the other member
    of the share (it takes turns), which answers from there and stores nothing."""
    before = [_accepted(gw) for gw in nodes]
    (counted,) = await _rows(nodes[0], "SELECT count(*) FROM messages")
    send = json.dumps({"to": "+4915112345000", "body": CANARY_BODY}).encode()
    replies: list[aiomqtt.Message] = []
    async with _client(broker.port) as client:
        await client.subscribe(REPLIES, qos=1)
        for n in range(2):
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = REPLIES
            props.CorrelationData = f"try-{n}".encode()
            props.UserProperty = [("idempotency-key", "order-7")]
            await client.publish("hosp/send", send, qos=1, properties=props)
            async with asyncio.timeout(WAIT):
                replies.append(await anext(aiter(client.messages)))
    first, again = replies
    assert again.payload == first.payload and again.properties is not None
    assert ("idempotent-replayed", "true") in again.properties.UserProperty
    accepted = [_accepted(gw) - b for gw, b in zip(nodes, before, strict=True)]
    replayed = [
        gw.metrics.registry.get_sample_value(
            "smsgw_mqtt_sends_received_total", {"outcome": "replayed"}
        )
        for gw in nodes
    ]
    assert sorted(v or 0.0 for v in replayed) == [0.0, 1.0]
    assert [a + (r or 0.0) for a, r in zip(accepted, replayed, strict=True)] == [1, 1]
    assert await _rows(nodes[0], "SELECT count(*) FROM messages") == [(counted[0] + 1,)]


async def test_each_node_keeps_its_connection_and_its_own_status_topic(
    nodes: list[Gateway], broker: Mosquitto
) -> None:
    gw1, gw2 = nodes
    assert {_link(gw).names.client_id for gw in nodes} == {"smsgw-gw1", "smsgw-gw2"}
    async with _client(broker.port) as client:
        await client.subscribe("hosp/status/#", qos=1)
        said: dict[str, bytes] = {}
        async with asyncio.timeout(WAIT):
            async for message in client.messages:
                said[str(message.topic)] = bytes(message.payload)
                if len(said) == 2:
                    break
        assert said == {"hosp/status/gw1": b"online", "hosp/status/gw2": b"online"}
        # Neither connection was taken over by the other's (one client id would).
        assert all(_link(gw).connected and _link(gw).failures == 0 for gw in nodes)
        async with asyncio.timeout(WAIT):
            await _link(gw2).wait_peers_online(1)
        await gw2.stop()
        async with asyncio.timeout(WAIT):
            async for message in client.messages:
                said[str(message.topic)] = bytes(message.payload)
                if said["hosp/status/gw2"] == b"offline":
                    break
            await _link(gw1).wait_peers_online(0)
        assert said["hosp/status/gw1"] == b"online" and _link(gw1).connected
        # gw2 left the send share as it stopped (gw1 was online): the broker keeps none
        # of the sends for it, gw1 takes each. gw1, now alone, would stay in.
        await client.subscribe(REPLIES, qos=1)
        for n in range(2):
            props = Properties(PacketTypes.PUBLISH)
            props.ResponseTopic = REPLIES
            props.CorrelationData = f"after-{n}".encode()
            body = json.dumps({"to": f"+4915112346{n:03d}", "body": CANARY_BODY}).encode()
            await client.publish("hosp/send", body, qos=1, properties=props)
        answered = set()
        async with asyncio.timeout(WAIT):
            async for message in client.messages:
                if str(message.topic) == REPLIES:
                    assert message.properties is not None
                    answered.add(message.properties.CorrelationData)
                    if len(answered) == 2:
                        break
        assert _accepted(gw1) == 2
