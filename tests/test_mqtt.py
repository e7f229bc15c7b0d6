"""MQTT against a real broker (Debian's mosquitto, started here): events out, sends in."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from structlog.testing import capture_logs

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.integrations.events import (
    MESSAGE_INBOUND,
    MESSAGE_STATUS,
    ROUTE_HEALTH,
    DeliveryFailed,
    OutboxEvent,
)
from gateway.integrations.mqtt import MqttConsumer, MqttLink, mqtt_consumer
from gateway.startup import StartupFault
from gateway.tokens import create_token
from tests.conftest import CANARY_BODY, CANARY_DIGITS, CANARY_NUMBER, GatewayFactory, state_of
from tests.peers.mosquitto import Mosquitto, binary
from tests.store_rows import message_row

pytestmark = pytest.mark.skipif(binary("mosquitto") is None, reason="make peers installs it")

WAIT = 10.0
PHI = {"to": CANARY_NUMBER, "body": CANARY_BODY}


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    directory = tmp_path / "broker"
    directory.mkdir()
    b = Mosquitto(directory)
    await b.start()
    yield b
    await b.stop()


@asynccontextmanager
async def subscriber(port: int, topic: str, **options: Any) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(
        "127.0.0.1", port, protocol=aiomqtt.ProtocolVersion.V5, **options
    ) as client:
        await client.subscribe(topic, qos=1)
        yield client


async def next_message(client: aiomqtt.Client, *, status: bool = False) -> aiomqtt.Message:
    """The next message; the gateway's `hosp/status` (online/offline) only if `status`."""
    async with asyncio.timeout(WAIT):
        async for message in client.messages:
            if status or str(message.topic) != "hosp/status":
                return message
    raise AssertionError("the subscription ended")


def status_event(seq: int, message_id: str = "06HMSG0001") -> OutboxEvent:
    return OutboxEvent(
        id=f"evt-{seq}",
        seq=seq,
        type=MESSAGE_STATUS,
        at=1_800_000_000.0 + seq,
        message_id=message_id,
        route="main",
        data={"state": "sent", "message_id": message_id},
        phi=PHI,
    )


async def gateway_with_mqtt(
    open_gateway: GatewayFactory, port: int, **mqtt: Any
) -> tuple[Gateway, MqttLink]:
    gw = await open_gateway(mqtt={"enabled": True, "port": port, "topic_prefix": "hosp", **mqtt})
    assert gw.mqtt is not None
    async with asyncio.timeout(WAIT):
        await gw.mqtt.wait_connected()
    return gw, gw.mqtt


async def drive(consumer: MqttConsumer, link: MqttLink, events: Sequence[OutboxEvent]) -> None:
    """The outbox's contract in miniature: each event in order, retried until delivered."""
    for event in events:
        while True:
            try:
                await consumer.deliver(event)
                break
            except DeliveryFailed:
                await link.wait_connected()


# -- events out ------------------------------------------------------------------------


@pytest.mark.parametrize("phi", [False, True])
async def test_events_go_to_id_topics_with_phi_only_when_configured(
    open_gateway: GatewayFactory, broker: Mosquitto, phi: bool
) -> None:
    gw, link = await gateway_with_mqtt(open_gateway, broker.port, phi=phi)
    consumer = mqtt_consumer(gw.config, link)
    assert consumer.wants_phi is phi
    events = [
        status_event(1),
        OutboxEvent(
            "evt-2",
            2,
            MESSAGE_INBOUND,
            1.0,
            "06HIN00001",
            "main",
            {"inbound_id": "06HIN00001", "route": "main"},
            {"from": CANARY_NUMBER, "text": CANARY_BODY},
        ),
        OutboxEvent("evt-3", 3, ROUTE_HEALTH, 1.0, None, "smsc/a+b", {"state": "down"}),
    ]
    async with subscriber(broker.port, "hosp/#") as sub:
        for event in events:
            await consumer.deliver(event)
        got = [await next_message(sub) for _ in events]
    assert [str(m.topic) for m in got] == [
        "hosp/messages/06HMSG0001/status",
        "hosp/inbound/06HIN00001",
        "hosp/routes/smsc%2Fa%2Bb/health",
    ]
    assert all(m.qos == 1 for m in got)
    payloads = [json.loads(m.payload) for m in got if isinstance(m.payload, bytes)]
    assert [p["id"] for p in payloads] == ["evt-1", "evt-2", "evt-3"]
    assert payloads[0]["data"] == {"state": "sent", "message_id": "06HMSG0001"}
    raw = b"".join(m.payload for m in got if isinstance(m.payload, bytes))
    if phi:
        assert payloads[0]["phi"] == PHI
        assert payloads[1]["phi"] == {"from": CANARY_NUMBER, "text": CANARY_BODY}
    else:
        assert "phi" not in payloads[0]
        assert CANARY_DIGITS.encode() not in raw and b"CANARY" not in raw
    assert all(CANARY_DIGITS not in str(m.topic) for m in got)


async def test_events_raised_while_the_broker_is_down_arrive_after_it_returns_in_order(
    open_gateway: GatewayFactory, broker: Mosquitto, clock: FakeClock
) -> None:
    gw, link = await gateway_with_mqtt(open_gateway, broker.port)
    consumer = mqtt_consumer(gw.config, link)
    await consumer.deliver(status_event(1))
    await broker.stop()
    async with asyncio.timeout(WAIT):
        await link.wait_disconnected()
    with pytest.raises(DeliveryFailed) as failed:
        await consumer.deliver(status_event(2))
    assert failed.value.reason == "mqtt_down"

    await broker.start()  # same port
    async with subscriber(broker.port, "hosp/#") as sub:
        driver = asyncio.create_task(drive(consumer, link, [status_event(n) for n in (2, 3, 4)]))
        async with asyncio.timeout(WAIT):
            await link.wait_backing_off()  # the link waits out its back-off...
        clock.advance(gw.config.mqtt.reconnect_max)  # ...which ends now
        async with asyncio.timeout(WAIT):
            await driver
        got = [json.loads(bytes((await next_message(sub)).payload)) for _ in range(3)]
    assert [p["seq"] for p in got] == [2, 3, 4]


# -- the link ---------------------------------------------------------------------------


async def test_tls_and_password_connect(open_gateway: GatewayFactory, tmp_path: Path) -> None:
    directory = tmp_path / "broker"
    directory.mkdir()
    broker = Mosquitto(directory, users={"smsgw": "s3cret-pw"}, tls=True)
    await broker.start()
    try:
        assert broker.tls is not None and broker.tls_port is not None
        (tmp_path / "mqtt.pw").write_text("s3cret-pw\n")
        gw, link = await gateway_with_mqtt(
            open_gateway,
            broker.tls_port,
            tls=True,
            ca_file=str(broker.tls.ca),
            username="smsgw",
            password_file="mqtt.pw",
        )
        await mqtt_consumer(gw.config, link).deliver(status_event(1))  # PUBACK came back
    finally:
        await broker.stop()
    assert any("as smsgw" in line or "u'smsgw'" in line for line in broker.log)


async def test_wrong_password_is_logged_clearly_and_retried_with_back_off(
    open_gateway: GatewayFactory, tmp_path: Path, clock: FakeClock
) -> None:
    directory = tmp_path / "broker"
    directory.mkdir()
    broker = Mosquitto(directory, users={"smsgw": "right-pw"})
    await broker.start()
    try:
        (tmp_path / "mqtt.pw").write_text("wrong-pw")
        with capture_logs() as logs:
            gw = await open_gateway(
                mqtt={
                    "enabled": True,
                    "port": broker.port,
                    "username": "smsgw",
                    "password_file": "mqtt.pw",
                    "reconnect_min": 1.0,
                    "reconnect_max": 8.0,
                }
            )
            assert gw.mqtt is not None
            delays = []
            for attempt in (1, 2, 3):
                async with asyncio.timeout(WAIT):
                    await gw.mqtt.wait_backing_off(attempt)
                refused = [e for e in logs if e["event"] == "mqtt_login_refused"]
                delays.append(refused[-1]["retry_in"])
                clock.advance(refused[-1]["retry_in"] + 0.001)  # the log rounds it
            assert not gw.mqtt.connected
            with pytest.raises(DeliveryFailed):
                await mqtt_consumer(gw.config, gw.mqtt).deliver(status_event(1))
    finally:
        await broker.stop()
    assert len(refused) == 3
    assert {e["log_level"] for e in refused} == {"error"}
    assert {e["reason"] for e in refused} == {"auth_refused"}
    assert refused[0]["username"] == "smsgw"
    assert 0.8 <= delays[0] <= 1.0 < 1.6 <= delays[1] <= 2.0 < 3.2 <= delays[2] <= 4.0
    text = repr(logs)
    assert "wrong-pw" not in text and CANARY_DIGITS not in text and "CANARY" not in text


# -- the send topic ----------------------------------------------------------------------


async def send_gateway(
    open_gateway: GatewayFactory, tmp_path: Path, port: int, **http: Any
) -> tuple[Gateway, str]:
    """A gateway with the send topic on, acting with a send token kept in a file."""
    gw = await open_gateway(
        start=False,
        mqtt={
            "enabled": True,
            "port": port,
            "topic_prefix": "hosp",
            "send_topic": True,
            "send_token_file": "mqtt.token",
        },
        http={"shutdown_grace": 1.0, **http},
    )
    token = await create_token(gw.store, "mqtt", frozenset({"send"}), gw.clock)
    (tmp_path / "mqtt.token").write_text(token.text + "\n")
    await gw.start(dispatch=False)
    assert gw.mqtt is not None
    async with asyncio.timeout(WAIT):
        await gw.mqtt.wait_connected()
    return gw, token.id


async def request(
    port: int, payload: bytes, correlation: bytes = b"req-1", key: str | None = None
) -> aiomqtt.Message:
    """Post to the send topic with a response topic (and an `idempotency-key`); the
    reply that comes back."""
    async with subscriber(port, "client/replies") as client:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "client/replies"
        props.CorrelationData = correlation
        if key is not None:
            props.UserProperty = [("idempotency-key", key)]
        await client.publish("hosp/send", payload, qos=1, properties=props)
        return await next_message(client)


async def test_a_send_over_mqtt_is_accepted_answered_and_sent(
    open_gateway: GatewayFactory, broker: Mosquitto, tmp_path: Path
) -> None:
    gw, token_id = await send_gateway(open_gateway, tmp_path, broker.port)
    reply = await request(
        broker.port, json.dumps({"to": CANARY_NUMBER, "body": CANARY_BODY}).encode(), b"\x00\x01"
    )
    assert reply.properties is not None
    assert reply.properties.CorrelationData == b"\x00\x01"
    assert ("status", "202") in reply.properties.UserProperty
    answer = json.loads(bytes(reply.payload))
    assert answer["status"] == "queued" and answer["segments"] == 1
    row = await message_row(gw.store, answer["id"])
    assert row is not None and row["token_id"] == token_id
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, answer["id"]) == "sent"


async def test_a_send_without_response_topic_is_processed_and_logged_by_id(
    open_gateway: GatewayFactory, broker: Mosquitto, tmp_path: Path
) -> None:
    gw, _ = await send_gateway(open_gateway, tmp_path, broker.port)
    with capture_logs() as logs:
        async with subscriber(broker.port, "unused") as client:
            await client.publish(
                "hosp/send", json.dumps({"to": CANARY_NUMBER, "body": "hi"}), qos=1
            )
        # Requests are handled one at a time in order: once this one's reply is here,
        # the first one has been handled too.
        await request(broker.port, b"{}")
    accepted = [e for e in logs if e["event"] == "mqtt_send_accepted"]
    assert len(accepted) == 1 and accepted[0]["replied"] is False
    assert await state_of(gw, accepted[0]["message_id"]) == "queued"
    assert CANARY_DIGITS not in repr(logs)


async def test_an_idempotency_key_answers_a_repeat_with_the_first_answer(
    open_gateway: GatewayFactory, broker: Mosquitto, tmp_path: Path
) -> None:
    """As `Idempotency-Key` on HTTP: the same key and request again (a client's retry, a
    redelivered publish) gets the stored answer, marked; another request under it, 409."""
    gw, _ = await send_gateway(open_gateway, tmp_path, broker.port)
    send = json.dumps({"to": CANARY_NUMBER, "body": CANARY_BODY}).encode()
    first = await request(broker.port, send, key="order-7")
    again = await request(broker.port, send, key="order-7")
    assert again.payload == first.payload
    assert again.properties is not None and first.properties is not None
    assert ("idempotent-replayed", "true") in again.properties.UserProperty
    assert ("idempotent-replayed", "true") not in first.properties.UserProperty
    other = await request(broker.port, send.replace(b"}", b', "priority": "high"}'), key="order-7")
    assert json.loads(bytes(other.payload))["error"]["code"] == "idempotency_conflict"
    long = await request(broker.port, send, key="k" * 256)
    assert json.loads(bytes(long.payload))["error"]["code"] == "invalid_idempotency_key"
    assert tuple(await gw.store.reader.one("SELECT count(*) FROM messages") or ()) == (1,)


@pytest.mark.parametrize(
    ("payload", "code", "field"),
    [
        (b"{not json", "bad_json", None),
        (
            json.dumps({"to": CANARY_NUMBER, "body": CANARY_BODY, "colour": CANARY_BODY}).encode(),
            "unknown_field",
            None,
        ),
        (json.dumps({"to": 12025550147, "body": CANARY_BODY}).encode(), "invalid_field", "to"),
        (json.dumps({"to": CANARY_NUMBER}).encode(), "missing_field", "body"),
        (json.dumps({"to": "+1202555014", "body": CANARY_BODY}).encode(), "invalid_number", "to"),
        (json.dumps({"to": CANARY_NUMBER, "body": "x" * 3000}).encode(), "too_large", None),
        (json.dumps([CANARY_NUMBER, CANARY_BODY]).encode(), "invalid_field", None),
    ],
)
async def test_bad_payloads_get_an_error_on_the_response_topic_and_store_nothing(
    open_gateway: GatewayFactory,
    broker: Mosquitto,
    tmp_path: Path,
    payload: bytes,
    code: str,
    field: str | None,
) -> None:
    gw, _ = await send_gateway(open_gateway, tmp_path, broker.port, max_body_bytes=2048)
    reply = await request(broker.port, payload)
    body = json.loads(bytes(reply.payload))
    assert body["error"]["code"] == code
    assert body["error"].get("field") == field
    assert reply.properties is not None and reply.properties.CorrelationData == b"req-1"
    assert CANARY_DIGITS.encode() not in reply.payload and b"CANARY" not in reply.payload
    assert b"colour" not in reply.payload
    assert tuple(await gw.store.reader.one("SELECT count(*) FROM messages") or ()) == (0,)


async def test_the_send_topic_is_not_subscribed_without_a_token_that_can_send(
    open_gateway: GatewayFactory, broker: Mosquitto, tmp_path: Path
) -> None:
    gw = await open_gateway(
        start=False,
        mqtt={
            "enabled": True,
            "port": broker.port,
            "send_topic": True,
            "send_token_file": "mqtt.token",
        },
    )
    token = await create_token(gw.store, "reader", frozenset({"read"}), gw.clock)
    (tmp_path / "mqtt.token").write_text(token.text)
    with pytest.raises(StartupFault, match=r"^mqtt\.send_token_file: .*send scope"):
        await gw.start(dispatch=False)
    assert gw.mqtt is None


async def test_no_reply_goes_to_the_gateways_own_topics(
    open_gateway: GatewayFactory, broker: Mosquitto, tmp_path: Path
) -> None:
    """A response topic naming the send topic would loop; under the prefix it would
    pass for an event. Such a request is handled, its reply not published."""
    await send_gateway(open_gateway, tmp_path, broker.port)
    with capture_logs() as logs:
        async with subscriber(broker.port, "#") as watcher:
            for reply_to in ("hosp/send", "hosp/messages/x/status"):
                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic = reply_to
                await watcher.publish("hosp/send", b"{}", qos=1, properties=props)
            await request(broker.port, b"{}")
            # The gateway publishes in order: a reply to either request above would
            # reach the watcher before the reply to the third one.
            seen: list[str] = []
            while not seen or seen[-1] != "client/replies":
                seen.append(str((await next_message(watcher)).topic))
    assert seen == ["hosp/send", "hosp/send", "hosp/send", "client/replies"]
    refused = [e for e in logs if e["event"] == "mqtt_reply_refused"]
    assert len(refused) == 2


# paho-mqtt does not close its socket when the TLS handshake fails (`_ssl_wrap_socket`
# in paho 2.2); the collector closes it, and this test collects before it ends.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_broker_certificate_that_does_not_verify_is_refused_and_retried(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    directory = tmp_path / "broker"
    directory.mkdir()
    broker = Mosquitto(directory, tls=True)
    await broker.start()
    try:
        assert broker.tls_port is not None
        with capture_logs() as logs:
            gw = await open_gateway(
                mqtt={"enabled": True, "port": broker.tls_port, "tls": True}  # system CAs only
            )
            assert gw.mqtt is not None
            async with asyncio.timeout(WAIT):
                await gw.mqtt.wait_backing_off(1)
            assert not gw.mqtt.connected
    finally:
        await broker.stop()
        gc.collect()
    failed = [e for e in logs if e["event"] == "mqtt_connect_failed"]
    assert failed[0]["reason"] == "tls" and failed[0]["log_level"] == "warning"


async def test_a_send_over_mqtt_reports_its_status_through_the_outbox(
    open_gateway: GatewayFactory, broker: Mosquitto, tmp_path: Path
) -> None:
    """End to end: the MQTT consumer is registered with the gateway's outbox, so the
    state changes of a message sent over the send topic come back on its id topic, in
    order, with ids only."""
    gw, _ = await send_gateway(open_gateway, tmp_path, broker.port)
    async with subscriber(broker.port, "hosp/messages/#") as sub:
        reply = await request(
            broker.port, json.dumps({"to": CANARY_NUMBER, "body": CANARY_BODY}).encode()
        )
        message_id = json.loads(bytes(reply.payload))["id"]
        await gw.scheduler.run_until_idle()
        assert await gw.outbox.run_once("mqtt")
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["data"]["state"] != "sent":
            message = await next_message(sub)
            assert str(message.topic) == f"hosp/messages/{message_id}/status"
            text = bytes(message.payload).decode()
            assert CANARY_DIGITS not in text and CANARY_BODY not in text
            seen.append(json.loads(text))
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(seqs) and len({e["id"] for e in seen}) == len(seen)
    assert [e["data"]["state"] for e in seen][-2:] == ["sending", "sent"]
