"""Configuration: one frozen, typed tree, loaded from TOML and validated at load.

Every key and its default is documented in `config/smsgw.example.toml`. A bad file
stops start-up with one line naming the key: `routes[1].rate: expected a positive
number, got "fast"`. No file at all means the embedded default: state in `./data`, one
`loopback` route, the API on 127.0.0.1:8080.

Routes are a tagged union on `type`: the keys every route shares are checked here,
the rest by the options struct the driver declares (`drivers.registry`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import phonenumbers

from drivers.registry import UnknownDriver, load_driver
from gateway.analytics.settings import AnalyticsConfig
from gateway.appointments.settings import AppointmentsConfig
from gateway.campaigns.settings import CampaignsConfig  # i15-campaigns
from gateway.cluster.route_settings import route_problem
from gateway.cluster.settings import ClusterConfig, cluster_problem
from gateway.config_errors import ConfigError as ConfigError  # raised here, caught by callers
from gateway.config_errors import convert, show
from gateway.consent.inbound_config import inbound_problems
from gateway.consent.settings import ConsentConfig
from gateway.directory.settings import DirectoryConfig
from gateway.hl7.settings import DEMO_INTERFACE as DEMO_HL7_INTERFACE
from gateway.hl7.settings import DEMO_OUTBOUND as DEMO_HL7_OUTBOUND
from gateway.hl7.settings import Hl7Config
from gateway.links.settings import DEMO_LINKS, LinksConfig
from gateway.models import Priority
from gateway.replies.settings import RepliesConfig
from gateway.results.settings import MedicationConfig, ResultsConfig, pattern_problems
from gateway.retention.settings import RetentionConfig
from gateway.templates.settings import TemplatesConfig

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Share = Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)]
ClassName = Literal["critical", "high", "normal", "bulk"]
ALL_CLASSES: tuple[ClassName, ...] = ("critical", "high", "normal", "bulk")


class HttpConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    listen: str = "127.0.0.1:8080"
    max_body_bytes: PositiveInt = 4 * 1024 * 1024
    max_batch: PositiveInt = 1000
    token_cache_seconds: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    shutdown_grace: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    access_log: bool = False
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    allow_plain_http: bool = False
    # Slow clients (gateway/web/connections.py): seconds to finish a request's headers
    # from its first byte, its body from the end of the headers, and the next request's
    # headers on an idle connection; connection caps.
    header_timeout: PositiveFloat = 10.0
    body_timeout: PositiveFloat = 60.0
    keepalive_timeout: PositiveFloat = 60.0
    max_connections: PositiveInt = 4096
    max_connections_per_address: PositiveInt = 128
    # Proxies whose forwarded headers are believed (gateway/web/client.py), and names
    # the Host header may carry besides the loopback ones (gateway/web/guard.py).
    trusted_proxies: tuple[str, ...] = ()
    proxy_headers: Literal["x-forwarded", "forwarded"] = "x-forwarded"
    server_names: tuple[str, ...] = ()

    def problems(self) -> str | None:
        """The first proxy or server name that is not one, as `http.key[i]: problem`."""
        for i, proxy in enumerate(self.trusted_proxies):
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                return (
                    f'http.trusted_proxies[{i}]: expected an IP address or network, got "{proxy}"'
                )
        for i, name in enumerate(self.server_names):
            if not name or any(c.isspace() or c in "/@,;" for c in name):
                return f'http.server_names[{i}]: expected a host name, got "{name}"'
        return None

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None

    def plain_http_problem(self) -> str | None:
        """Why serving this listen address without TLS is refused, or None if it is not.

        The panel's sessions and the API's tokens must not cross the hospital network in
        clear: plain HTTP is for loopback only, where a TLS-terminating proxy on this
        host reaches us (name it in `trusted_proxies`). `allow_plain_http` no longer
        widens that; it is refused with any other address."""
        if self.tls:
            return None
        host = self.listen.rpartition(":")[0].strip("[]")
        if host == "localhost":
            return None
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass  # a host name: it may resolve off the machine
        key = "http.allow_plain_http" if self.allow_plain_http else "http.listen"
        return (
            f"{key}: {self.listen} is not a loopback address and TLS is off; plain HTTP is"
            " served on loopback only. Set http.tls_cert_file and http.tls_key_file (smsgw"
            " init --self-signed-cert makes a pair), or listen on 127.0.0.1 behind a TLS"
            " proxy on this host and list it in http.trusted_proxies"
        )


class StoreConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: str = "smsgw.db"
    master_key_file: str = "master.key"
    synchronous: Literal["FULL", "EXTRA", "NORMAL"] = "FULL"
    group_commit_max: PositiveInt = 2000
    idempotency_hours: PositiveFloat = 168.0
    # i14-keys: re-encryption after `smsgw keys rotate`, rows read per second at most
    rekey_rows_per_second: PositiveFloat = 200.0
    # i14-socket: key custody without a TPM (gateway/custody.py).
    master_key_passphrase_file: str | None = None  # unlocks a passphrase-protected key
    master_key_media: str | None = None  # a mount point the key file must sit on
    # how long a `sent` or a receipt waits to ride in another commit (ms).
    lazy_commit_ms: Annotated[float, msgspec.Meta(ge=0, le=5000)] = 200.0

    def problems(self) -> str | None:
        """The first bad custody key, as `store.key: problem`."""
        if self.master_key_passphrase_file == "":
            return "store.master_key_passphrase_file: empty; remove the key or name a file"
        media = self.master_key_media
        if media is None:
            return None
        if not Path(media).is_absolute():
            return (
                f"store.master_key_media: expected an absolute path (a mount point), got {media!r}"
            )
        key = Path(self.master_key_file)
        if not key.is_absolute() or not key.is_relative_to(media):
            return (
                "store.master_key_media: store.master_key_file must be an absolute path on"
                f" that media (under {media})"
            )
        return None


class ClassPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    expires_after: PositiveFloat
    max_attempts: PositiveInt
    min_share: Share = 0.0
    want_receipt: bool = True


class ClassesConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    critical: ClassPolicy = ClassPolicy(expires_after=4 * 3600, max_attempts=12)
    high: ClassPolicy = ClassPolicy(expires_after=12 * 3600, max_attempts=10, min_share=0.1)
    normal: ClassPolicy = ClassPolicy(expires_after=24 * 3600, max_attempts=8, min_share=0.05)
    bulk: ClassPolicy = ClassPolicy(expires_after=48 * 3600, max_attempts=5, min_share=0.02)


class QueueConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_segments: PositiveInt = 10
    default_region: str = "US"
    retry_base: PositiveFloat = 2.0
    retry_cap: PositiveFloat = 600.0
    # How far ahead a send may be scheduled (send_at) and expire (expires_at, counted
    # from send_at): later times are refused at accept.
    max_schedule_days: Annotated[float, msgspec.Meta(gt=0, le=3650)] = 365.0
    # Seconds a `sent` message waits for its receipt before it is reported
    # `receipt_overdue` (still `sent`, not failed); 0 turns the report off.
    receipt_deadline: Annotated[float, msgspec.Meta(ge=0)] = 72 * 3600.0
    classes: ClassesConfig = msgspec.field(default_factory=ClassesConfig)
    # i15-spread: classes whose messages, while more than one waits, go to any route their
    # rules allow that can take them now (preference order first), not only to the first:
    # an emergency broadcast leaves over every route at once, each at its own rate.
    spread_classes: tuple[ClassName, ...] = ("critical",)

    def policy(self, priority: Priority) -> ClassPolicy:
        policy: ClassPolicy = getattr(self.classes, priority.label)
        return policy


class InboundConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    # How long the parts of a concatenated inbound message wait for the rest of their
    # set (counted from the first part) before what came is stored flagged incomplete.
    reassembly_timeout: PositiveFloat = 300.0


class LogConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


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


Role = Literal["admin", "operator", "viewer", "auditor"]


class AdminConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    idle_timeout: PositiveFloat = 15 * 60.0
    absolute_lifetime: PositiveFloat = 12 * 3600.0
    throttle_after: Annotated[int, msgspec.Meta(ge=0)] = 3
    max_delay: PositiveFloat = 60.0
    max_failed_logins: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    lockout_minutes: PositiveFloat = 15.0
    failure_audit_window: PositiveFloat = 900.0
    totp_required_roles: tuple[Role, ...] = ()
    totp_issuer: str = "smsgw"
    password_hash_memory_kib: Annotated[int, msgspec.Meta(ge=19456)] = 65536
    password_hash_iterations: Annotated[int, msgspec.Meta(ge=2)] = 3
    password_hash_lanes: PositiveInt = 4
    # i14-socket: the daemon's admin socket for console commands (gateway/ops/socket.py).
    socket: Annotated[str, msgspec.Meta(min_length=1)] = "admin.sock"


class RouteConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The keys every route shares; `options` holds the driver's own, typed by it."""

    name: str
    type: str
    rate: PositiveFloat | None = None
    burst: PositiveInt = 1
    window: PositiveInt = 10
    claim_ahead: PositiveInt | None = None
    classes: tuple[ClassName, ...] = ALL_CLASSES
    prefixes: tuple[str, ...] = ()
    # i15-spread: false keeps this route for failover: a spreading class's messages come
    # here when the routes before it are down, never because they are busy.
    spread: bool = True
    # On a cluster (gateway/cluster/route_settings.py checks them): the nodes
    # that may bind this route (empty: every node), the carrier's session cap across the
    # nodes and how long a dead node's session may linger there, and the carrier account
    # (`[[cluster.accounts]]`) whose shared rate its sends count against.
    eligible_nodes: tuple[str, ...] = ()
    max_binds: PositiveInt | None = None
    bind_grace_seconds: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    account: str | None = None
    options: Any = None

    @property
    def claim_ahead_or_default(self) -> int:
        """Messages claimed (`sending`, durable) beyond the window: three windows unless set."""
        return 3 * self.window if self.claim_ahead is None else self.claim_ahead


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


class DemoConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[demo]`: the embedded default's simulated peers with a config file too."""

    peers: bool = False


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    data_dir: str = "data"
    http: HttpConfig = msgspec.field(default_factory=HttpConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)
    inbound: InboundConfig = msgspec.field(default_factory=InboundConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    mqtt: MqttConfig = msgspec.field(default_factory=MqttConfig)
    kannel: KannelConfig = msgspec.field(default_factory=KannelConfig)
    routes: tuple[RouteConfig, ...] = ()
    webhooks: tuple[WebhookConfig, ...] = ()
    outbox: OutboxConfig = msgspec.field(default_factory=OutboxConfig)
    demo: DemoConfig = msgspec.field(default_factory=DemoConfig)
    consent: ConsentConfig = msgspec.field(default_factory=ConsentConfig)
    appointments: AppointmentsConfig = msgspec.field(default_factory=AppointmentsConfig)
    hl7: Hl7Config = msgspec.field(default_factory=Hl7Config)  # MLLP feeds (gateway/hl7/)
    templates: TemplatesConfig = msgspec.field(default_factory=TemplatesConfig)
    results: ResultsConfig = msgspec.field(default_factory=ResultsConfig)
    medication: MedicationConfig = msgspec.field(default_factory=MedicationConfig)
    replies: RepliesConfig = msgspec.field(default_factory=RepliesConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)  # MSG-12
    campaigns: CampaignsConfig = msgspec.field(default_factory=CampaignsConfig)  # i15-campaigns
    links: LinksConfig = msgspec.field(default_factory=LinksConfig)  # i15-links: short links
    analytics: AnalyticsConfig = msgspec.field(default_factory=AnalyticsConfig)  # i15-analytics
    directory: DirectoryConfig = msgspec.field(default_factory=DirectoryConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
    source: str | None = None

    @property
    def demo_peers(self) -> bool:
        """Whether `smsgw run` starts the simulated SMSC and modems and answers the
        `/api/v1/demo/...` calls: always for the embedded default, else on `demo.peers`."""
        return self.source is None or self.demo.peers

    def resolve(self, path: str) -> Path:
        """A path from the config, relative ones taken against `data_dir`."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.data_dir) / p

    @property
    def db_path(self) -> Path:
        return self.resolve(self.store.path)

    @property
    def master_key_path(self) -> Path:
        return self.resolve(self.store.master_key_file)

    @property
    def admin_socket_path(self) -> Path:
        return self.resolve(self.admin.socket)

    @property
    def tls_paths(self) -> tuple[Path, Path] | None:
        """(certificate, key) when the HTTP server speaks TLS."""
        cert, key = self.http.tls_cert_file, self.http.tls_key_file
        if cert is None and key is None:
            return None
        if cert is None or key is None:
            missing = "tls_key_file" if key is None else "tls_cert_file"
            raise ConfigError(f"http.{missing}: missing (TLS needs both a certificate and a key)")
        return self.resolve(cert), self.resolve(key)

    def route(self, name: str) -> RouteConfig:
        for r in self.routes:
            if r.name == name:
                return r
        raise KeyError(name)


_ROUTE_COMMON = frozenset(RouteConfig.__struct_fields__) - {"options"}

EMBEDDED_SMSC_SYSTEM_ID = "smsgw"


EMBEDDED_MODEM_ROUTE = "modems"
EMBEDDED_SMSC_ROUTE = "smsc-sim"
EMBEDDED_LOOPBACK_ROUTE = "demo"
EMBEDDED_ROUTE_NAMES = (EMBEDDED_SMSC_ROUTE, EMBEDDED_MODEM_ROUTE, EMBEDDED_LOOPBACK_ROUTE)


def embedded_routes(
    smsc_port: int | None = None, smsc_password: str = "", modem_ports: Sequence[str] = ()
) -> tuple[RouteConfig, ...]:
    """The embedded default's routes: the built-in SMSC simulator over real SMPP (when
    it runs), a bank of emulated modems (when they run; messages reach it when they
    name it as their route, or on failover), and last a loopback route."""
    raw: list[dict[str, Any]] = []
    if smsc_port is not None:
        raw.append(
            {
                "name": EMBEDDED_SMSC_ROUTE,
                "type": "smpp",
                "rate": 50,
                "burst": 10,
                "window": 20,
                "host": "127.0.0.1",
                "port": smsc_port,
                "system_id": EMBEDDED_SMSC_SYSTEM_ID,
                "password": smsc_password,
                "reconnect_min": 0.5,
                "reconnect_max": 5.0,
            }
        )
    if modem_ports:
        raw.append(
            {
                "name": EMBEDDED_MODEM_ROUTE,
                "type": "modem",
                "window": len(modem_ports),
                "modems": [
                    {"name": f"modem{i + 1}", "port": port} for i, port in enumerate(modem_ports)
                ],
                "reopen_min": 0.5,
                "reopen_max": 5.0,
            }
        )
    raw.append(
        {
            "name": EMBEDDED_LOOPBACK_ROUTE,
            "type": "loopback",
            "rate": 50,
            "burst": 10,
            "window": 20,
            "receipt_delay": 2.0,
            "latency": 0.05,
            # It sends nowhere: an emergency broadcast spreads over the simulated carrier
            # and the modems, and reaches this route only when both are down.
            "spread": False,
        }
    )
    return from_mapping({"routes": raw}).routes


def embedded_default(data_dir: str = "data") -> Config:
    """The `make run` demo: simulated routes, and every send and receipt in the log
    (debug level), so a newcomer watches messages go through."""
    raw = {
        "data_dir": data_dir,
        "log": {"level": "debug"},
        # an EHR feed to try `smsgw hl7 send` on, its write-back to `smsgw hl7 listen`
        "hl7": {"interfaces": [DEMO_HL7_INTERFACE, DEMO_HL7_OUTBOUND]},
        "links": DEMO_LINKS,  # {link:flu-clinic} becomes http://127.0.0.1:8081/<token>
    }
    return msgspec.structs.replace(from_mapping(raw), routes=embedded_routes())


def load(path: str | os.PathLike[str] | None) -> Config:
    """Load a TOML file, or the embedded default when `path` is None."""
    if path is None:
        return embedded_default()
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    raw.setdefault("data_dir", str(p.parent.resolve()))
    raw["source"] = str(p)
    return from_mapping(raw)


def from_mapping(raw: Mapping[str, Any]) -> Config:
    raw = dict(raw)
    queue = raw.get("queue")
    if isinstance(queue, dict) and "default_priority" in queue:
        raise ConfigError(
            "queue.default_priority: no longer used; a send naming no class takes its"
            " purpose's (set [consent.purposes.<purpose>] priority) — remove this key"
        )
    routes = raw.pop("routes", [])
    if not isinstance(routes, list):
        raise ConfigError(f"routes: expected a list of tables, got {show(routes)}")
    config: Config = convert(raw, Config, raw, "")
    _check_values(config)
    built = tuple(_route(i, r) for i, r in enumerate(routes))
    names = [r.name for r in built]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"routes[{i}].name: duplicate route name {name!r}")
        if config.demo.peers and name in EMBEDDED_ROUTE_NAMES:
            raise ConfigError(
                f"demo.peers: the simulated peers add a route named {name!r}, and routes[{i}]"
                " has that name; rename that route or set demo.peers = false"
            )
    config = msgspec.structs.replace(config, routes=built)
    if problem := route_problem(config):  # the routes' cluster keys
        raise ConfigError(problem)
    return config


def _route(index: int, raw: Any) -> RouteConfig:
    where = f"routes[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table, got {show(raw)}")
    common = {k: v for k, v in raw.items() if k in _ROUTE_COMMON}
    own = {k: v for k, v in raw.items() if k not in _ROUTE_COMMON}
    if "type" not in common:
        raise ConfigError(f"{where}.type: missing (one of the driver types)")
    route: RouteConfig = convert(common, RouteConfig, raw, where)
    try:
        factory = load_driver(route.type)
    except UnknownDriver as e:
        raise ConfigError(f"{where}.type: {e}") from None
    options = convert(own, factory.Options, raw, where)
    return msgspec.structs.replace(route, options=options)


# -- values their type cannot check ----------------------------------------------------


def _check_values(config: Config) -> None:
    if problem := listen_problem(config.http.listen):
        raise ConfigError(f"http.listen: {problem}")
    if problem := config.http.problems():
        raise ConfigError(problem)
    if problem := config.mqtt.problems():
        raise ConfigError(problem)
    if problem := config.store.problems():
        raise ConfigError(problem)
    if problem := config.kannel.problems():
        raise ConfigError(problem)
    if problem := config.consent.problems():
        raise ConfigError(problem)
    if problem := inbound_problems(config.consent):
        raise ConfigError(problem)
    if problem := config.appointments.problems():
        raise ConfigError(problem)
    if problem := config.hl7.problems():
        raise ConfigError(problem)
    if problem := config.templates.problems():
        raise ConfigError(problem)
    for problem in pattern_problems(config.medication):
        raise ConfigError(problem)
    if problem := config.retention.problems():
        raise ConfigError(problem)
    if problem := config.campaigns.problems():  # i15-campaigns
        raise ConfigError(problem)
    if problem := config.links.problems():
        raise ConfigError(problem)
    if problem := config.analytics.problems():  # i15-analytics
        raise ConfigError(problem)
    if problem := config.directory.problems():
        raise ConfigError(problem)
    region = config.queue.default_region
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f'queue.default_region: "{region}" is not a region; write a two-letter country'
            ' code in capitals (ISO 3166-1, as phone numbers use them), e.g. "US" or "GB"'
        )
    _check_webhooks(config)
    if problem := cluster_problem(config):  # after the rest: it names them
        raise ConfigError(problem)


def _check_webhooks(config: Config) -> None:
    from gateway.integrations.addresses import url_problem  # no import cycle at load

    names: list[str] = []
    for i, hook in enumerate(config.webhooks):
        where = f"webhooks[{i}]"
        if hook.name in names:
            raise ConfigError(f"{where}.name: duplicate webhook name {hook.name!r}")
        names.append(hook.name)
        if problem := url_problem(hook.url, hook.allow_loopback, hook.allow_plain_http):
            raise ConfigError(f"{where}.url: {problem}")
        if (hook.secret_file is None) == (hook.secret_credential is None):
            raise ConfigError(
                f"{where}.secret_file: give exactly one of secret_file or secret_credential"
            )
        if (hook.client_cert_file is None) != (hook.client_key_file is None):
            raise ConfigError(
                f"{where}.client_key_file: a client certificate needs both"
                " client_cert_file and client_key_file"
            )
        if not hook.events:
            raise ConfigError(f"{where}.events: name at least one event type")
        if hook.states is not None and not hook.states:
            raise ConfigError(f"{where}.states: name at least one state, or leave the key out")
    if config.outbox.backoff_initial > config.outbox.backoff_max:
        raise ConfigError("outbox.backoff_initial: must not exceed outbox.backoff_max")


def listen_problem(listen: str) -> str | None:
    """What is wrong with a HOST:PORT listen address, or None."""
    host, colon, port = listen.rpartition(":")
    bare = host.strip("[]")
    if ":" in bare and not (host.startswith("[") and host.endswith("]")):
        return f'"{listen}": an IPv6 address goes in brackets, e.g. "[::1]:8080"'
    if not colon or not port.isdigit():
        example = (host if colon else listen) or "127.0.0.1"
        return f'"{listen}" has no port; write HOST:PORT, e.g. "{example}:8080"'
    if not bare:
        return f'"{listen}" has no host; write e.g. "127.0.0.1:{port}" (this machine only)'
    if int(port) > 65535:
        return f"port {port} is out of range (0-65535)"
    return None
