"""The MQTT send topic: a JSON send request in, its result or error out.

A payload on the send topic is what `POST /api/v1/messages` takes, checked by the same
decoder and accepted by the same path (`accept_one`, the one call to re-point when the
application layer moves). It acts with the API token in `[mqtt] send_token_file`: the
message belongs to that token, and without a valid token with the `send` scope the
topic is not subscribed at all. The answer — the accepted record, or the API's error
body, which never quotes what was sent — goes to the request's MQTT 5 Response Topic
with its Correlation Data; a request without a response topic is processed and only
logged (by id).

A request may carry an MQTT 5 user property `idempotency-key`, as `Idempotency-Key` on
HTTP: the first answer is stored with the messages (on a cluster in PostgreSQL), and
the same key from the same token, on any node, gets that answer again instead of a
second message (a client's retry, a publish the broker delivers again).
"""

from __future__ import annotations

import hashlib
import ssl
from typing import TYPE_CHECKING

import aiomqtt
import msgspec
import structlog

from drivers.credentials import SecretError, read_secret
from gateway.errors import ApiError
from gateway.intake import Accepted, decode_send
from gateway.integrations.events import DeliveryFailed
from gateway.integrations.mqtt import MqttLink, open_link, response_properties
from gateway.startup import StartupFault
from gateway.tokens import TokenRecord
from gateway.usecases import Caller
from gateway.usecases.messages import IDEMPOTENCY_KEY_MAX, IdempotencyKey, StoredAnswer

if TYPE_CHECKING:
    from gateway.app import Gateway

log = structlog.get_logger("smsgw.mqtt")

IDEMPOTENCY_PROPERTY = "idempotency-key"  # an MQTT 5 user property of a send request


async def accept_one(
    gw: Gateway, token: TokenRecord, raw: bytes, key: IdempotencyKey | None = None
) -> Accepted | StoredAnswer:
    """Decode one send request and hand it to the same use case as `POST /messages`;
    with a key, the answer stored under it if there is one."""
    messages, caller = gw.usecases.messages, Caller.for_token(token)
    if key is None:
        return await messages.accept(caller, decode_send(raw))
    if (stored := await messages.replay(caller, key)) is not None:
        return stored
    try:
        return await messages.accept(caller, decode_send(raw), idempotency=key)
    except ApiError as e:
        # Another node answered the same key meanwhile: its insert won, ours kept nothing.
        if e.status == 503 and (stored := await messages.replay(caller, key)) is not None:
            return stored
        raise


def idempotency_key(props: object, topic: str, payload: bytes) -> IdempotencyKey | None:
    """The request's `idempotency-key` user property, hashed with the request."""
    pairs = getattr(props, "UserProperty", None) or []
    key = next((v for k, v in pairs if k.lower() == IDEMPOTENCY_PROPERTY), None)
    if key is None:
        return None
    if not key or len(key) > IDEMPOTENCY_KEY_MAX:
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"the idempotency-key property must be 1 to {IDEMPOTENCY_KEY_MAX} characters",
        )
    request = hashlib.sha256(b"mqtt\0" + topic.encode() + b"\0" + payload).digest()
    return IdempotencyKey(hashlib.sha256(key.encode()).digest(), request, 202)


class SendTopic:
    """Handles the messages of the send topic on a link."""

    def __init__(self, gw: Gateway, link: MqttLink, token_text: str) -> None:
        self._gw = gw
        self._link = link
        self._token_text = token_text

    async def token(self) -> TokenRecord | None:
        """The send token's record when it is valid and may send; None otherwise."""
        record = await self._gw.tokens.verify(self._token_text)
        if record is None or "send" not in record.scopes:
            return None
        return record

    async def handle(self, message: aiomqtt.Message) -> None:
        props = message.properties
        reply_to: str | None = getattr(props, "ResponseTopic", None) if props else None
        correlation: bytes | None = getattr(props, "CorrelationData", None) if props else None
        payload = message.payload if isinstance(message.payload, bytes) else b""
        replayed = False
        try:
            answer = await self._accept(
                payload, idempotency_key(props, str(message.topic), payload)
            )
        except ApiError as e:
            self._gw.metrics.mqtt_sends.labels("refused").inc()
            status, body = e.status, msgspec.json.encode(e.body())
            log.info("mqtt_send_refused", code=e.code, field=e.field, replied=bool(reply_to))
        else:
            if isinstance(answer, StoredAnswer):
                self._gw.metrics.mqtt_sends.labels("replayed").inc()
                status, body, replayed = answer.status, answer.body, True
                log.info("mqtt_send_replayed", status=status, replied=bool(reply_to))
            else:
                self._gw.metrics.mqtt_sends.labels("accepted").inc()
                status, body = 202, msgspec.json.encode(answer)
                log.info("mqtt_send_accepted", message_id=answer.id, replied=bool(reply_to))
        if reply_to and not self._may_reply_to(reply_to):
            log.warning("mqtt_reply_refused", reason="response_topic_reserved")
        elif reply_to:
            try:
                await self._link.publish(
                    reply_to, body, response_properties(correlation, status, replayed=replayed)
                )
            except DeliveryFailed as e:
                log.warning("mqtt_reply_lost", reason=e.reason)

    def _may_reply_to(self, topic: str) -> bool:
        """Not into the gateway's own topics (a reply on the send topic would be read as
        the next request, and one under the prefix would pass for an event), nor a
        wildcard, which no one can publish to."""
        m = self._gw.config.mqtt
        own = topic == m.send_topic_path or topic.startswith(m.topic_prefix + "/")
        return not own and not any(c in topic for c in "#+\0")

    async def _accept(self, payload: bytes, key: IdempotencyKey | None) -> Accepted | StoredAnswer:
        limit = self._gw.config.http.max_body_bytes
        if len(payload) > limit:
            raise ApiError(413, "too_large", f"the request is larger than {limit} bytes")
        token = await self.token()
        if token is None:
            raise ApiError(
                401, "unauthenticated", "the gateway's MQTT send token is not valid for sending"
            )
        return await accept_one(self._gw, token, payload, key)


async def start_mqtt(gw: Gateway) -> MqttLink:
    """Connect to the broker per `[mqtt]` (in the background) and, when the send topic
    is on, subscribe to it. Unreadable secrets or a send token that cannot send stop
    start-up with one line naming the key."""
    config = gw.config
    try:
        link = open_link(config, gw.clock, gw.metrics)
    except SecretError as e:
        raise StartupFault(f"mqtt.password_file: {e}", exit_code=2) from None
    except (ssl.SSLError, OSError) as e:
        raise StartupFault(
            f"mqtt.tls: the CA file or client certificate does not load ({type(e).__name__})",
            exit_code=2,
        ) from None
    m = config.mqtt
    if m.send_topic and m.send_token_file is not None:
        try:
            token_text = read_secret(file=str(config.resolve(m.send_token_file))) or ""
        except SecretError as e:
            raise StartupFault(f"mqtt.send_token_file: {e}", exit_code=2) from None
        topic = SendTopic(gw, link, token_text.strip())
        if await topic.token() is None:
            raise StartupFault(
                "mqtt.send_token_file: the token in this file is unknown, revoked or lacks"
                " the send scope; the send topic is not subscribed without one",
                exit_code=2,
            )
        link.subscribe(link.names.send_filter, topic.handle)
    link.start()
    return link
