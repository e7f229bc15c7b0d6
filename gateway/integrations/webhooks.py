"""Webhook endpoints: events POSTed as JSON, signed per the Standard Webhooks spec.

Each `[[webhooks]]` endpoint is two outbox consumers: the endpoint itself (the event
types it lists), and its callbacks (status events of messages whose `callback_url`
has this endpoint's origin, POSTed to that URL with this endpoint's secret and TLS
settings); `states`, when set, limits both to status events of those states, and
`concurrency` is how many events each delivers at once. Headers: `webhook-id` (the
event's stable id, for de-duplication), `webhook-timestamp` (Unix seconds) and
`webhook-signature` (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, the secret a
`whsec_` base64 key).

POSTs go through `http_client.Origin` (kept-alive HTTP/1.1 connections per endpoint).
Redirects are never followed; hosts resolve through `CheckedResolver` (no link-local,
metadata or unconfigured loopback addresses); HTTPS verifies the certificate (against
`ca_file` when given, with the client certificate when configured). A failure becomes
`DeliveryFailed` with a short reason code; a log line names the endpoint and the code,
never the URL or the payload.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import time
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime

import msgspec

from drivers.credentials import read_secret
from gateway.config import Config, WebhookConfig
from gateway.integrations.addresses import CheckedResolver, origin
from gateway.integrations.events import MESSAGE_STATUS, DeliveryFailed, OutboxEvent
from gateway.integrations.http_client import Origin, request_target

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's key prefix, not a secret
USER_AGENT = "smsgw-webhooks/1"
_HEADERS = (("User-Agent", USER_AGENT), ("Content-Type", "application/json"))


class WebhookSecretError(ValueError):
    """An endpoint's secret is missing or not a `whsec_` base64 key (never quoted)."""


def decode_secret(text: str) -> bytes:
    raw = text.strip()
    raw = raw.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except ValueError:
        raise WebhookSecretError("expected whsec_ followed by base64") from None
    if len(key) < 16:
        raise WebhookSecretError("the key must be at least 16 bytes (24 base64 characters)")
    return key


class Signer:
    """`webhook-signature` values for one key: the HMAC keyed once, copied per body
    (half the cost of keying it for every delivery)."""

    def __init__(self, key: bytes) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)

    def sign(self, event_id: str, timestamp: int, body: bytes) -> str:
        mac = self._keyed.copy()
        mac.update(f"{event_id}.{timestamp}.".encode())
        mac.update(body)
        return "v1," + base64.b64encode(mac.digest()).decode("ascii")


_JSON = msgspec.json.Encoder()  # compact, as json.dumps with (",", ":"), at half the CPU


def payload(event: OutboxEvent, phi: bool) -> bytes:
    """`{"type", "timestamp", "data"}`, the spec's recommended shape; the personal
    fields join `data` only for an endpoint configured with `phi = true`."""
    data = {**event.data, **event.phi} if phi and event.phi else event.data
    stamp = datetime.fromtimestamp(event.at, UTC).isoformat().replace("+00:00", "Z")
    return _JSON.encode({"type": event.type, "timestamp": stamp, "data": data})


def client_context(hook: WebhookConfig, config: Config) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=None if hook.ca_file is None else str(config.resolve(hook.ca_file))
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if hook.client_cert_file is not None and hook.client_key_file is not None:
        context.load_cert_chain(
            config.resolve(hook.client_cert_file), config.resolve(hook.client_key_file)
        )
    return context


class Poster:
    """One endpoint's HTTP client: its secret, TLS context, checked resolver and
    kept-alive connections (`http_client.Origin`)."""

    def __init__(
        self, hook: WebhookConfig, config: Config, wall: Callable[[], float] = time.time
    ) -> None:
        secret = read_secret(
            file=None if hook.secret_file is None else str(config.resolve(hook.secret_file)),
            credential=hook.secret_credential,
        )
        if secret is None:
            raise WebhookSecretError("no secret configured")
        self.hook = hook
        self.origin = origin(hook.url)
        self._signer = Signer(decode_secret(secret))
        self._ssl = client_context(hook, config)
        self._wall = wall
        self._origins: dict[tuple[str, str, int] | None, Origin] = {}
        self._targets: dict[str, bytes] = {hook.url: request_target(hook.url)}
        self._own: Origin | None = None  # the endpoint URL's (no URL parsing per POST)

    def _client(self, url: str) -> Origin:
        if url == self.hook.url and self._own is not None:
            return self._own
        key = origin(url)
        client = self._origins.get(key)
        if client is None:
            # Kept-alive connections, one per event in flight: the endpoint's lane and
            # its callbacks' lane each deliver up to `concurrency` at once.
            client = self._origins[key] = Origin(
                url,
                self._ssl,
                CheckedResolver(self.hook.allow_loopback),
                limit=2 * self.hook.concurrency,
                headers=_HEADERS,
            )
        if url == self.hook.url:
            self._own = client
        return client

    async def post(self, url: str, event: OutboxEvent, phi: bool) -> None:
        body = payload(event, phi)
        # Real wall time, not the injected clock: receivers reject a timestamp outside
        # their replay window (5 minutes in the reference library).
        stamp = int(self._wall())
        target = self._targets.get(url)
        if target is None:
            target = request_target(url)  # a callback URL
        headers = (
            f"webhook-id: {event.id}\r\nwebhook-timestamp: {stamp}\r\n"
            f"webhook-signature: {self._signer.sign(event.id, stamp, body)}\r\n"
        ).encode()
        status = await self._client(url).post(target, headers, body, self.hook.timeout)
        if 300 <= status < 400:
            raise DeliveryFailed("redirect_refused")
        if not 200 <= status < 300:
            raise DeliveryFailed(f"http_{status}")

    async def close(self) -> None:
        origins, self._origins, self._own = list(self._origins.values()), {}, None
        for client in origins:
            await client.close()


class _Endpoint:
    """What both of an endpoint's consumers take from its settings."""

    _poster: Poster

    @property
    def wants_phi(self) -> bool:
        return self._poster.hook.phi

    @property
    def concurrency(self) -> int:
        return self._poster.hook.concurrency

    @property
    def states(self) -> frozenset[str] | None:
        states = self._poster.hook.states
        return None if states is None else frozenset(states)


class WebhookConsumer(_Endpoint):
    """The endpoint's own feed: every event of the types it lists (status events of
    its `states` only, when it lists some)."""

    def __init__(self, poster: Poster) -> None:
        self._poster = poster
        self._events = frozenset(poster.hook.events)

    @property
    def name(self) -> str:
        return f"webhook:{self._poster.hook.name}"

    def accepts(self, event_type: str) -> bool:
        return event_type in self._events

    async def deliver(self, event: OutboxEvent) -> None:
        await self._poster.post(self._poster.hook.url, event, self.wants_phi)

    async def close(self) -> None:
        await self._poster.close()


class CallbackConsumer(_Endpoint):
    """Status events of messages whose `callback_url` shares this endpoint's origin,
    POSTed to that URL (checked again here: the accept-time check could predate a
    config change). The outbox asks `wanted_messages` once per batch: one read finds
    the few messages that have a callback, none is read per event."""

    def __init__(
        self,
        poster: Poster,
        lookup: Callable[[Collection[str]], Awaitable[dict[str, str]]],
    ) -> None:
        self._poster = poster
        self._lookup = lookup  # message ids -> the callback URLs of those that have one
        self._urls: dict[str, str] = {}  # the last batch's, at this origin

    @property
    def name(self) -> str:
        return f"callback:{self._poster.hook.name}"

    def accepts(self, event_type: str) -> bool:
        return event_type == MESSAGE_STATUS

    def _ours(self, urls: dict[str, str]) -> dict[str, str]:
        return {m: u for m, u in urls.items() if origin(u) == self._poster.origin}

    async def wanted_messages(self, message_ids: Collection[str]) -> Collection[str]:
        """Which of a batch's messages have a callback here (the dispatcher skips the
        others' events silently)."""
        self._urls = self._ours(await self._lookup(message_ids))
        return self._urls.keys()

    async def deliver(self, event: OutboxEvent) -> None:
        if event.message_id is None:
            return
        url = self._urls.get(event.message_id)
        if url is None:  # a retry or a redelivery after its batch
            url = self._ours(await self._lookup([event.message_id])).get(event.message_id)
        if url is not None:
            await self._poster.post(url, event, self.wants_phi)

    async def close(self) -> None:
        """The endpoint's consumer closes the shared client."""
