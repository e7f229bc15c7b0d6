"""The config's own sections of the service: HTTP, store, queue, inbound, log, admin,
the keys every route shares, and the check of a HOST:PORT listen address.

`gateway.config` assembles them into `Config` and re-exports each name here.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from gateway.models import Priority

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
    # How long a delivery left unacknowledged (its store may have committed) is matched
    # by the carrier's redelivery, on any node, so it is stored once (a day: a carrier's
    # validity period; `gateway/inbound_doubt.py`).
    in_doubt_seconds: PositiveFloat = 86_400.0


class LogConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


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
