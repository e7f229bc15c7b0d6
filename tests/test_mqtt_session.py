"""The MQTT link's session against a real mosquitto: the send-topic subscription and
the sends posted while the gateway is away survive a lost connection; the retained
`<prefix>/status` says online/offline (the broker's last will when the link is lost);
the link's metrics. The connection runs through a relay the test can cut, so the
broker sees a lost connection, not a clean DISCONNECT."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.integrations.mqtt import MqttLink
from tests import test_mqtt
from tests.conftest import CANARY_BODY, CANARY_NUMBER, GatewayFactory
from tests.peers.mosquitto import Mosquitto, binary
from tests.store_rows import message_row
from tests.test_mqtt import WAIT, gateway_with_mqtt, next_message, send_gateway, subscriber

pytestmark = pytest.mark.skipif(binary("mosquitto") is None, reason="make peers installs it")

broker = test_mqtt.broker  # the fixture


class Relay:
    """A TCP relay on loopback to `target`; `cut()` aborts every connection through it."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers += [writer, up_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.fixture
async def relay(broker: Mosquitto) -> AsyncIterator[Relay]:
    r = Relay(broker.port)
    await r.start()
    yield r
    await r.stop()


async def lose_connection(link: MqttLink, relay: Relay) -> None:
    relay.cut()
    async with asyncio.timeout(WAIT):
        await link.wait_backing_off()  # away until the test moves the clock


def metric(gw: Gateway, name: str, labels: dict[str, str] | None = None) -> float | None:
    return gw.metrics.registry.get_sample_value(name, labels or {})


async def test_a_send_posted_while_the_gateway_is_away_is_handled_after_reconnect(
    open_gateway: GatewayFactory,
    broker: Mosquitto,
    relay: Relay,
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    gw, token_id = await send_gateway(open_gateway, tmp_path, relay.port)
    link = gw.mqtt
    assert link is not None
    async with subscriber(broker.port, "client/replies") as client:
        await lose_connection(link, relay)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "client/replies"
        props.CorrelationData = b"while-away"
        payload = json.dumps({"to": CANARY_NUMBER, "body": CANARY_BODY}).encode()
        await client.publish("hosp/send", payload, qos=1, properties=props)
        clock.advance(gw.config.mqtt.reconnect_max)  # the back-off ends: reconnect
        reply = await next_message(client)
    assert reply.properties is not None
    assert reply.properties.CorrelationData == b"while-away"
    assert ("status", "202") in reply.properties.UserProperty
    row = await message_row(gw.store, json.loads(bytes(reply.payload))["id"])
    assert row is not None and row["token_id"] == token_id
    assert metric(gw, "smsgw_mqtt_sends_received_total", {"outcome": "accepted"}) == 1
    # The reply reached the subscriber; the broker's PUBACK to the gateway may come after.
    await asyncio.wait_for(link.wait_published(1), WAIT)
    assert (metric(gw, "smsgw_mqtt_published_total") or 0) >= 1
    assert metric(gw, "smsgw_mqtt_connected") == 1


async def test_status_is_online_retained_and_offline_on_loss_and_on_stop(
    open_gateway: GatewayFactory, broker: Mosquitto, relay: Relay, clock: FakeClock
) -> None:
    gw, link = await gateway_with_mqtt(open_gateway, relay.port)
    async with subscriber(broker.port, "hosp/status") as sub:
        first = await next_message(sub, status=True)
        assert (first.payload, first.retain) == (b"online", True)
        await lose_connection(link, relay)
        assert metric(gw, "smsgw_mqtt_connected") == 0
        assert (await next_message(sub, status=True)).payload == b"offline"  # the last will
        clock.advance(gw.config.mqtt.reconnect_max)
        assert (await next_message(sub, status=True)).payload == b"online"
        await gw.stop()
        assert (await next_message(sub, status=True)).payload == b"offline"
    # Retained: a client that subscribes later learns the gateway is offline.
    async with subscriber(broker.port, "hosp/status") as late:
        message = await next_message(late, status=True)
        assert (message.payload, message.retain) == (b"offline", True)


async def test_publish_failures_are_counted_by_reason(
    open_gateway: GatewayFactory, broker: Mosquitto, relay: Relay
) -> None:
    gw, link = await gateway_with_mqtt(open_gateway, relay.port)
    await lose_connection(link, relay)
    with pytest.raises(Exception, match="mqtt_down"):
        await link.publish("hosp/x", b"{}")
    assert metric(gw, "smsgw_mqtt_publish_failures_total", {"reason": "mqtt_down"}) == 1
