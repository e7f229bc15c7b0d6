"""Configuration: one frozen, typed tree, loaded from TOML and validated at load.

Every key and its default is documented in `config/smsgw.example.toml`. A bad file
stops start-up with one line naming the key: `routes[1].rate: expected a positive
number, got "fast"`. No file at all means the embedded default: state in `./data`, one
`loopback` route, the API on 127.0.0.1:8080.

Routes are a tagged union on `type`: the keys every route shares are checked here,
the rest by the options struct the driver declares (`drivers.registry`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
from gateway.config_integrations import (
    EventName,
    KannelConfig,
    KannelUser,
    MessageStateName,
    MqttConfig,
    OutboxConfig,
    WebhookConfig,
)
from gateway.config_sections import (
    ALL_CLASSES,
    AdminConfig,
    ClassesConfig,
    ClassName,
    ClassPolicy,
    HttpConfig,
    InboundConfig,
    LogConfig,
    PositiveFloat,
    PositiveInt,
    QueueConfig,
    Role,
    RouteConfig,
    Share,
    StoreConfig,
    listen_problem,
)
from gateway.consent.inbound_config import inbound_problems
from gateway.consent.settings import ConsentConfig
from gateway.directory.settings import DirectoryConfig
from gateway.hl7.settings import DEMO_INTERFACE as DEMO_HL7_INTERFACE
from gateway.hl7.settings import DEMO_OUTBOUND as DEMO_HL7_OUTBOUND
from gateway.hl7.settings import Hl7Config
from gateway.links.settings import DEMO_LINKS, LinksConfig
from gateway.replies.settings import RepliesConfig
from gateway.results.settings import MedicationConfig, ResultsConfig, pattern_problems
from gateway.retention.settings import RetentionConfig
from gateway.templates.settings import TemplatesConfig

# The sections live in config_sections.py and config_integrations.py; every name stays
# importable from here.
__all__ = [
    "ALL_CLASSES",
    "EMBEDDED_LOOPBACK_ROUTE",
    "EMBEDDED_MODEM_ROUTE",
    "EMBEDDED_ROUTE_NAMES",
    "EMBEDDED_SMSC_ROUTE",
    "EMBEDDED_SMSC_SYSTEM_ID",
    "AdminConfig",
    "ClassName",
    "ClassPolicy",
    "ClassesConfig",
    "Config",
    "ConfigError",
    "DemoConfig",
    "EventName",
    "HttpConfig",
    "InboundConfig",
    "KannelConfig",
    "KannelUser",
    "LogConfig",
    "MessageStateName",
    "MqttConfig",
    "OutboxConfig",
    "PositiveFloat",
    "PositiveInt",
    "QueueConfig",
    "Role",
    "RouteConfig",
    "Share",
    "StoreConfig",
    "WebhookConfig",
    "embedded_default",
    "embedded_routes",
    "from_mapping",
    "listen_problem",
    "load",
]


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
