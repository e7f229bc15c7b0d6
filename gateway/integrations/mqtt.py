"""MQTT: the gateway's events published to a broker, and a topic to send through.

Theory of operation. One `MqttLink` keeps one connection to the broker (MQTT 5, QoS 1)
in a task: connect, subscribe to the send topic if it is on, hand each message it
brings to the send handler, and when the connection ends or cannot be made, wait an
exponentially growing delay (with jitter, on the gateway's clock) and try again. Each
attempt is a fresh client, so nothing published during a dead connection is kept in
the client to be sent later behind the outbox's back: the outbox alone decides what
is published and in what order.

The broker keeps the gateway's session across a disconnect (`clean_start` false, a
`session_expiry`, the stable `client_id`): the send-topic subscription stays, and sends
posted while the gateway is away are queued by the broker and handled on reconnect.
`<prefix>/status` says `online` (retained) once connected and `offline` at a clean
stop; the broker publishes `offline` as the connection's last will when it is lost.

On a cluster each node has names of its own (`mqtt_names.py`): its client id and
status topic, and a share of the send topic (`$share/...`, one node gets each send).
A node follows the others' status topics and, stopping while one of them is online,
leaves the share first: a broker would otherwise keep the stopped node's turn of the
sends in its session until it is back. A node that died cannot leave: one live node
takes its queued turn and ends its session (`mqtt_drain.py`).

`MqttConsumer` is the outbox's consumer (`gateway.integrations.events`): it turns an
event into a topic that carries ids and route names only and a JSON payload with the
personal fields only when `[mqtt] phi = true`, and publishes it through the link.
While the link is down it raises `DeliveryFailed("mqtt_down")`, so the outbox keeps
the event and delivers it, in order, once the broker is back.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt
import msgspec
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from drivers.clock import Clock
from drivers.credentials import read_secret
from gateway.config import Config, MqttConfig
from gateway.integrations.events import (
    EVENT_TYPES,
    MESSAGE_INBOUND,
    MESSAGE_STATUS,
    ROUTE_HEALTH,
    DeliveryFailed,
    OutboxEvent,
)
from gateway.integrations.mqtt_drain import ShareDrain
from gateway.integrations.mqtt_names import MqttNames, names_for, topic_level
from gateway.logs import exception_summary
from gateway.metrics import Metrics

log = structlog.get_logger("smsgw.mqtt")
# The client library's own log (connects, packets by topic and size): warnings only,
# our structlog lines above say what an operator needs.
_client_log = logging.getLogger("smsgw.mqtt.client")
_client_log.setLevel(logging.WARNING)

QOS = 1
ONLINE = b"online"
OFFLINE = b"offline"
CANCEL_AGAIN = 0.5  # seconds before a cancel of the link's task is repeated
# CONNACK reason codes that mean the broker refused our login (MQTT 3.1.1: 4, 5;
# MQTT 5: 0x86 bad user name or password, 0x87 not authorized, 0x8C bad auth method).
_AUTH_REFUSED = frozenset({4, 5, 0x86, 0x87, 0x8C})

MessageHandler = Callable[[aiomqtt.Message], Awaitable[None]]


class MqttLink:
    """One connection to the broker, kept up with reconnect and back-off."""

    def __init__(
        self,
        config: MqttConfig,
        clock: Clock,
        *,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        metrics: Metrics | None = None,
        names: MqttNames | None = None,
    ) -> None:
        self._config = config
        self.names = names or MqttNames.of(config)
        self._metrics = metrics
        self._clock = clock
        self._password = password
        self._tls = tls_context
        self._client: aiomqtt.Client | None = None
        self._subscription: tuple[str, MessageHandler] | None = None
        self._peers_online: set[str] = set()  # other nodes' status topics saying online
        self._task: asyncio.Task[None] | None = None
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self._backing_off = False
        self._changed = asyncio.Condition()
        self.failures = 0  # attempts in a row that ended without a connection, or lost it
        self.published = 0  # publishes the broker acknowledged
        self.drain: ShareDrain | None = None  # a dead peer's turn of the sends (a cluster)
        if self.names.client_prefix is not None:
            self.drain = ShareDrain(
                clock=clock,
                after=config.share_drain_after,
                own_status=self.names.status_topic,
                client_for=lambda identifier: self._new_client(identifier, drain=True),
                client_id_of=self.names.client_id_of,
                share_filter=self.names.send_filter,
                send_topic=config.send_topic_path,
                handler=lambda: None if self._subscription is None else self._subscription[1],
            )

    def subscribe(self, topic: str, handler: MessageHandler) -> None:
        """Subscribe to `topic` on every connection; `handler` gets each message."""
        self._subscription = (topic, handler)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    @property
    def status_topic(self) -> str:
        return self.names.status_topic

    async def aclose(self) -> None:
        """Leave the send topic's share if another node is online, say `offline`
        (retained) if connected, then disconnect."""
        if self.drain is not None:
            await self.drain.aclose()
        client = self._client
        if client is not None:
            try:
                async with asyncio.timeout(self._config.timeout):
                    await self._leave_share(client)
                    await client.publish(self.status_topic, OFFLINE, qos=QOS, retain=True)
            except (aiomqtt.MqttError, TimeoutError):
                log.warning("mqtt_offline_not_published")  # "online" may stay retained
        task, self._task = self._task, None
        while task is not None and not task.done():
            # Again until it ends: Python 3.11's `asyncio.wait_for` (under aiomqtt's
            # publish and subscribe) drops a cancel that races the broker's answer.
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_AGAIN)

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def wait_connected(self) -> None:
        await self._up.wait()

    async def wait_disconnected(self) -> None:
        await self._down.wait()

    async def wait_backing_off(self, failures: int = 1) -> None:
        """Return once the link waits out its back-off after `failures` failed attempts
        in a row (a lost connection counts as the first)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._backing_off and self.failures >= failures)

    async def wait_peers_online(self, count: int) -> None:
        """Return once `count` other nodes say online (exactly that many)."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self._peers_online) == count)

    async def wait_published(self, count: int) -> None:
        """Return once the broker has acknowledged `count` publishes in all."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.published >= count)

    async def publish(
        self, topic: str, payload: bytes, properties: Properties | None = None
    ) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK, or raise `DeliveryFailed`."""
        try:
            await self._publish(topic, payload, properties)
        except DeliveryFailed as e:
            if self._metrics is not None:
                self._metrics.mqtt_publish_failed.labels(e.reason).inc()
            raise
        if self._metrics is not None:
            self._metrics.mqtt_published.inc()
        self.published += 1
        async with self._changed:
            self._changed.notify_all()

    async def _publish(self, topic: str, payload: bytes, properties: Properties | None) -> None:
        client = self._client
        if client is None:
            raise DeliveryFailed("mqtt_down")
        sending = asyncio.ensure_future(
            client.publish(topic, payload, qos=QOS, properties=properties)
        )
        lost = asyncio.ensure_future(self._down.wait())
        try:
            await asyncio.wait({sending, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not sending.done():
                sending.cancel()
        if sending.cancelled():
            raise DeliveryFailed("mqtt_down")
        if (error := sending.exception()) is not None:
            timed_out = isinstance(error, aiomqtt.MqttError) and "timed out" in str(error)
            raise DeliveryFailed("mqtt_timeout" if timed_out else "mqtt_publish_failed") from None

    def _client_for_attempt(self) -> aiomqtt.Client:
        return self._new_client(self.names.client_id)

    def _new_client(self, identifier: str, *, drain: bool = False) -> aiomqtt.Client:
        """A client under `identifier`: this node's (its session kept `session_expiry`
        seconds, its last will saying offline), or a drain's of a dead peer's session
        (`mqtt_drain.py`: that session resumed, and ended when the drain disconnects)."""
        c = self._config
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: no hints
        connect.SessionExpiryInterval = 0 if drain else c.session_expiry
        return aiomqtt.Client(
            c.host,
            c.port,
            username=c.username,
            password=self._password,
            identifier=identifier,
            protocol=aiomqtt.ProtocolVersion.V5,
            timeout=c.timeout,
            tls_context=self._tls,
            logger=_client_log,
            clean_start=False if drain else c.session_expiry == 0,
            properties=connect,
            will=None if drain else aiomqtt.Will(self.status_topic, OFFLINE, qos=QOS, retain=True),
        )

    async def _run(self) -> None:
        while True:
            client = self._client_for_attempt()
            reason = "closed"
            try:
                async with client:
                    await self._connected(client)
                    async for message in client.messages:
                        await self._dispatch(message)
            except aiomqtt.MqttError as e:
                reason = _reason(e)
            except OSError as e:  # TLS handshake and socket errors paho lets through
                reason = "tls" if isinstance(e, ssl.SSLError) else "network"
            except Exception as e:  # the client library's own faults: log, and try again
                reason = "client_error"
                log.error("mqtt_client_error", error=exception_summary(e))
            finally:
                was_up = self._client is not None
                self._client = None
                self._up.clear()
                self._down.set()
                if self._metrics is not None:
                    self._metrics.mqtt_connected.set(0)
            self.failures = 1 if was_up else self.failures + 1
            delay = self._backoff(self.failures)
            fields = {"reason": reason, "retry_in": round(delay, 3), "attempt": self.failures}
            if reason == "auth_refused":
                log.error("mqtt_login_refused", username=self._config.username, **fields)
            elif was_up:
                log.warning("mqtt_disconnected", **fields)
            else:
                log.warning("mqtt_connect_failed", **fields)
            async with self._changed:
                self._backing_off = True
                self._changed.notify_all()
            try:
                await self._clock.sleep(delay)
            finally:
                self._backing_off = False

    async def _leave_share(self, client: aiomqtt.Client) -> None:
        """A broker gives a stopped member of a share its turn of the sends all the same,
        kept in its session until it is back: so a node that stops while another is
        online leaves the share. The last one stays in, and its session keeps the sends
        posted while every node is down."""
        if self._subscription is not None and self._peers_online:
            await client.unsubscribe(self._subscription[0])
            log.info("mqtt_send_share_left", peers_online=len(self._peers_online))

    async def _connected(self, client: aiomqtt.Client) -> None:
        if self._subscription is not None:
            await client.subscribe(self._subscription[0], qos=QOS)
            if self.names.peers_filter is not None:
                self._peers_online.clear()  # the retained word of each comes again
                await client.subscribe(self.names.peers_filter, qos=QOS)
        self._client = client  # first: a stop from now on publishes "offline" after this
        await client.publish(self.status_topic, ONLINE, qos=QOS, retain=True)
        self._down.clear()
        self._up.set()
        if self._metrics is not None:
            self._metrics.mqtt_connected.set(1)
        log.info("mqtt_connected", host=self._config.host, port=self._config.port)

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        peers = self.names.peers_filter
        if peers is not None and message.topic.matches(peers):
            await self._peer_said(str(message.topic), message.payload)
            return
        if self._subscription is None:
            return
        try:
            await self._subscription[1](message)
        except Exception as e:  # one bad message must not end the connection
            log.error("mqtt_message_failed", error=exception_summary(e))

    async def _peer_said(self, topic: str, payload: object) -> None:
        """Another node's status: online, or offline (its stop or its last will)."""
        if topic == self.status_topic:
            return
        if payload == ONLINE:
            self._peers_online.add(topic)
            if self.drain is not None:
                self.drain.peer_online(topic)
        else:
            self._peers_online.discard(topic)
            if self.drain is not None:
                self.drain.peer_offline(topic, lambda: set(self._peers_online))
        async with self._changed:
            self._changed.notify_all()

    def _backoff(self, failures: int) -> float:
        c = self._config
        delay = min(c.reconnect_max, c.reconnect_min * 2.0 ** min(failures - 1, 30))
        jitter: float = random.uniform(0.8, 1.0)  # noqa: S311  # jitter, not a secret
        return delay * jitter


def _reason(error: aiomqtt.MqttError) -> str:
    """A short code for the log; never the broker's text (it may quote a client id)."""
    rc = getattr(error, "rc", None)
    code = getattr(rc, "value", rc)
    if isinstance(code, int) and code in _AUTH_REFUSED:
        return "auth_refused"
    if (
        isinstance(error.__cause__, ssl.SSLError)
        or "SSL" in str(error)
        or "certificate" in str(error)
    ):
        return "tls"
    if isinstance(code, int):
        return f"mqtt_rc_{code}"
    return "network"


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The client's TLS context: the broker's certificate checked against `ca_file` (or
    the system's CAs), its name against `host`; a client certificate when given."""
    m = config.mqtt
    if not m.tls:
        return None
    ca = str(config.resolve(m.ca_file)) if m.ca_file else None
    context = ssl.create_default_context(cafile=ca)
    if m.cert_file and m.key_file:
        context.load_cert_chain(config.resolve(m.cert_file), config.resolve(m.key_file))
    return context


def open_link(config: Config, clock: Clock, metrics: Metrics | None = None) -> MqttLink:
    """A link built from `[mqtt]`, its secrets read now (a `SecretError` or an
    `ssl.SSLError`/`OSError` for a file that cannot be read stops start-up)."""
    m = config.mqtt
    password = None
    if m.password_file is not None:
        password = read_secret(file=str(config.resolve(m.password_file)))
    return MqttLink(
        m,
        clock,
        password=password,
        tls_context=tls_context(config),
        metrics=metrics,
        names=names_for(config),
    )


# -- events out ------------------------------------------------------------------------


def event_topic(prefix: str, event: OutboxEvent) -> str:
    """`<prefix>/messages/<id>/status`, `<prefix>/inbound/<id>` or
    `<prefix>/routes/<route>/health`: ids and route names, never a number."""
    if event.type == MESSAGE_STATUS and event.message_id is not None:
        return f"{prefix}/messages/{topic_level(event.message_id)}/status"
    if event.type == MESSAGE_INBOUND:
        inbound_id = event.data.get("inbound_id") or event.message_id
        if isinstance(inbound_id, str):
            return f"{prefix}/inbound/{topic_level(inbound_id)}"
    if event.type == ROUTE_HEALTH and event.route is not None:
        return f"{prefix}/routes/{topic_level(event.route)}/health"
    return f"{prefix}/events/{topic_level(event.type)}"


class EventPayload(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    seq: int
    type: str
    at: float
    message_id: str | None = None
    route: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    phi: dict[str, Any] | None = None


def event_payload(event: OutboxEvent, *, phi: bool) -> bytes:
    return msgspec.json.encode(
        EventPayload(
            event.id,
            event.seq,
            event.type,
            event.at,
            event.message_id,
            event.route,
            event.data,
            event.phi if phi else None,
        )
    )


class MqttConsumer:
    """The outbox's consumer for the broker (the `EventConsumer` protocol)."""

    def __init__(self, config: MqttConfig, link: MqttLink) -> None:
        self._config = config
        self._link = link

    @property
    def name(self) -> str:
        return "mqtt"

    @property
    def wants_phi(self) -> bool:
        return self._config.phi

    def accepts(self, event_type: str) -> bool:
        return event_type in EVENT_TYPES

    async def deliver(self, event: OutboxEvent) -> None:
        topic = event_topic(self._config.topic_prefix, event)
        await self._link.publish(topic, event_payload(event, phi=self._config.phi))
        log.debug("mqtt_published", event_id=event.id, type=event.type, seq=event.seq)


def mqtt_consumer(config: Config, link: MqttLink) -> MqttConsumer:
    """The consumer the outbox delivers to (registered by `Gateway.start`)."""
    return MqttConsumer(config.mqtt, link)


def response_properties(
    correlation: bytes | None, status: int, *, replayed: bool = False
) -> Properties:
    """MQTT 5 properties of a reply: the request's correlation data and an HTTP-like
    status as a user property, so a client tells a result from an error at a glance
    (and `idempotent-replayed`, as the HTTP header, when it is a stored answer)."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: no hints
    if correlation is not None:
        props.CorrelationData = correlation
    pairs = [("status", str(status))]
    if replayed:
        pairs.append(("idempotent-replayed", "true"))
    props.UserProperty = pairs
    return props
