"""The config's sections of the integrations: MQTT, the Kannel-compatible listener,
webhooks and the outbox that delivers to them.

`gateway.config` assembles them into `Config` and re-exports each name here.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from gateway.config_sections import PositiveFloat, PositiveInt, listen_problem

# An MQTT topic to publish or subscribe to: no wildcards, no NUL.
_TOPIC = r"^[^#+\x00]+$"


class MqttConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[mqtt]`: events published to a broker, and an optional send topic
    (gateway/integrations/mqtt.py). QoS is always 1."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password_file: str | None = None
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "smsgw"
    qos: Literal[1] = 1  # always at least once: receivers drop duplicates by event id
    topic_prefix: Annotated[str, msgspec.Meta(min_length=1, pattern=_TOPIC)] = "smsgw"
    phi: bool = False
    send_topic: bool = False
    send_topic_name: Annotated[str, msgspec.Meta(min_length=1, pattern=_TOPIC)] | None = None
    send_token_file: str | None = None
    reconnect_min: PositiveFloat = 0.5
    reconnect_max: PositiveFloat = 60.0
    timeout: PositiveFloat = 10.0
    # i11-perf: seconds the broker keeps the gateway's session (its send-topic
    # subscription and the sends posted meanwhile) across a disconnect; 0 = none.
    session_expiry: Annotated[int, msgspec.Meta(ge=0, le=4294967295)] = 86400
    # On a cluster: seconds a node may stay offline before a live node takes the sends
    # queued in its session and ends it (gateway/integrations/mqtt_drain.py).
    share_drain_after: PositiveFloat = 10.0

    def problems(self) -> str | None:
        """The first setting that cannot work, as `mqtt.key: problem`."""
        if not 1 <= self.port <= 65535:
            return f"mqtt.port: expected a port from 1 to 65535, got {self.port}"
        if not self.enabled:
            return None
        if self.topic_prefix.startswith("/") or self.topic_prefix.endswith("/"):
            return "mqtt.topic_prefix: must not start or end with /"
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            return f"mqtt.{missing}: missing (a client certificate needs both files)"
        if not self.tls and (self.ca_file or self.cert_file):
            return "mqtt.tls: must be true when ca_file or cert_file is set"
        if (self.username is None) != (self.password_file is None):
            missing = "password_file" if self.password_file is None else "username"
            return f"mqtt.{missing}: missing (a broker login needs a username and a password file)"
        if self.send_topic and self.send_token_file is None:
            return (
                "mqtt.send_token_file: missing; the send topic acts with an API token with"
                " the send scope, kept in this file (smsgw token create --scope send)"
            )
        if self.reconnect_min > self.reconnect_max:
            return "mqtt.reconnect_min: must not exceed mqtt.reconnect_max"
        return None

    @property
    def send_topic_path(self) -> str:
        return self.send_topic_name or f"{self.topic_prefix}/send"


class KannelUser(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A Kannel sendsms user and the smsgw API token its sends are made as."""

    username: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    password_file: Annotated[str, msgspec.Meta(min_length=1)]
    # The token: its text in a file, or the name of a live API token (one of the two).
    token_file: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    token: Annotated[str, msgspec.Meta(min_length=1)] | None = None
    sender: str | None = None  # the one `from` this user may name


class KannelConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The Kannel-compatible `/cgi-bin/sendsms` listener (gateway/integrations/)."""

    enabled: bool = False
    listen: str = "127.0.0.1:13013"  # Kannel's sendsms-port default
    users: tuple[KannelUser, ...] = ()
    dlr_url_origins: tuple[str, ...] = ()

    def problems(self) -> str | None:
        """The first bad key, as `kannel.key: problem`."""
        if problem := listen_problem(self.listen):
            return f"kannel.listen: {problem}"
        if self.enabled and not self.users:
            return "kannel.users: at least one user is needed when kannel.enabled is true"
        names = [u.username for u in self.users]
        for i, name in enumerate(names):
            if name in names[:i]:
                return f"kannel.users[{i}].username: duplicate user name {name!r}"
            if (self.users[i].token is None) == (self.users[i].token_file is None):
                return f"kannel.users[{i}].token_file: give token_file or token (one of the two)"
        for i, origin in enumerate(self.dlr_url_origins):
            if not re.fullmatch(r"https?://[^/?#@\s]+", origin) or origin != origin.lower():
                return (
                    f"kannel.dlr_url_origins[{i}]: expected scheme://host[:port] in lower"
                    ' case with no path, e.g. "https://ehr.example.org"'
                )
        return None


EventName = Literal[
    "message.status", "message.inbound", "route.health", "consent.changed", "appointment.reply"
]
MessageStateName = Literal[  # gateway.models.State's values
    "scheduled",
    "queued",
    "sending",
    "sent",
    "delivered",
    "failed",
    "expired",
    "cancelled",
    "blocked",
]


class WebhookConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One `[[webhooks]]` endpoint (gateway/integrations/webhooks.py)."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    url: Annotated[str, msgspec.Meta(max_length=2048)]
    events: tuple[EventName, ...] = (
        "message.status",
        "message.inbound",
        "route.health",
        "consent.changed",
        "appointment.reply",
    )
    secret_file: str | None = None
    secret_credential: str | None = None
    phi: bool = False
    ca_file: str | None = None
    client_cert_file: str | None = None
    client_key_file: str | None = None
    timeout: PositiveFloat = 10.0
    allow_loopback: bool = False
    allow_plain_http: bool = False
    # i16-outbox: events in flight at once on this endpoint (order kept per message), and
    # the message states its status events (feed and callbacks) report; None: all.
    concurrency: PositiveInt = 16
    states: tuple[MessageStateName, ...] | None = None


class OutboxConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    retry_for: PositiveFloat = 86400.0
    backoff_initial: PositiveFloat = 1.0
    backoff_max: PositiveFloat = 600.0
    retention_days: PositiveFloat = 7.0
    concurrency: PositiveInt = 64
    debounce: Annotated[float, msgspec.Meta(ge=0)] = 0.05
    safety_poll: PositiveFloat = 30.0
    # i11-perf: deliveries give way to sends, and get a grace period at shutdown.
    yield_to_sends: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    shutdown_grace: Annotated[float, msgspec.Meta(ge=0)] = 3.0
