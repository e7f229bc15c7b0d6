"""Checks every request passes before the API or the panel sees it.

Three, in this order, run by the API's error middleware before anything else (it turns
a refusal into the JSON error, and the security headers follow):

1. Who is asking: the client's address and scheme (`client.py`). Behind a trusted
   proxy the request is cloned with them, so `request.remote`, `request.secure` and
   `request.scheme` tell the truth to everything after (throttling, cookies, CSRF).
2. The path: a decoded path with a control character (`%00`, `%0a`, ...) names no file
   and no endpoint; it is refused here, before a file system call could choke on it.
3. The `Host` header (DNS-rebinding defence): a page on another site whose name the
   attacker points at 127.0.0.1 reaches us with its own name in `Host`. Only the names
   in `ServerNames` and the address the connection came in on are served; anything
   else gets 421, a missing `Host` 400.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterable

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.errors import ApiError
from gateway.web.client import CLIENT, Client, ProxyTrust

# Names a DNS-rebinding page cannot make a browser send for its own origin.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def split_host(value: str) -> tuple[str, str | None]:
    """`name[:port]` (IPv6 in brackets) into the lower-cased name and the port, if any."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value.partition("]")
        port = rest[1:] if rest.startswith(":") else None
        return name + "]", port
    name, sep, port = value.rpartition(":")
    if not sep or ":" in name:
        return value, None
    return name, port


class ServerNames:
    """The names this server answers to.

    An entry with a port (`gw.example:8443`) matches only that port; one without
    (`gw.example`) matches the name on any port (behind a proxy the public port is not
    ours). `local` entries match with no port or with the port the connection came in
    on, whatever that is (port 0 in tests, a proxy's upstream port in production).
    """

    def __init__(self, names: Iterable[str], local: Iterable[str]) -> None:
        split = [split_host(entry) for entry in names]
        self.any_port = frozenset(name for name, port in split if port is None)
        self.exact = frozenset(f"{name}:{port}" for name, port in split if port is not None)
        self.local = frozenset(split_host(n)[0] for n in local)

    def allows(self, host: str, local_ip: str | None, local_port: int | None) -> bool:
        """Whether to serve `Host: host` on a connection to `local_ip`:`local_port`.

        The address the connection came in on is a name too: a rebinding page always
        sends its own domain name, never our address."""
        name, port = split_host(host)
        if name in self.any_port or f"{name}:{port}" in self.exact:
            return True
        local = name in self.local or (local_ip is not None and name == local_ip)
        return local and (port is None or port == str(local_port))


def default_local_names(listen: str) -> tuple[str, ...]:
    """The loopback names and the listen host; for a wildcard, this machine's name."""
    host = split_host(listen)[0]
    wildcard = host in ("0.0.0.0", "[::]", "")  # noqa: S104 - compared, not bound
    return (*LOOPBACK_NAMES, socket.gethostname().lower() if wildcard else host)


def _local_address(request: web.BaseRequest) -> tuple[str | None, int | None]:
    """The address and port the connection came in on."""
    return local_address_of(request.transport)


def local_address_of(transport: asyncio.BaseTransport | None) -> tuple[str | None, int | None]:
    """The address (as a Host header names it) and port `transport` came in on."""
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2 and isinstance(sockname[1], int):
        return _host_form(str(sockname[0])), sockname[1]
    return None, None


class KnownConnection:
    """A connection's protocol that worked out, once, what the checks ask of every
    request on it (`connections.GuardedRequestHandler`): where it came in, and the
    client when the peer is no trusted proxy (then no header can change who it is)."""

    local: tuple[str | None, int | None] = (None, None)
    direct: Client | None = None

    def know(self, transport: asyncio.BaseTransport, trust: ProxyTrust) -> None:
        self.local = local_address_of(transport)
        peer = transport.get_extra_info("peername")
        # As aiohttp's `request.remote` and `request.scheme` read them.
        remote = None if peer is None else str(peer[0] if isinstance(peer, list | tuple) else peer)
        scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        if not trust.trusts(remote):
            self.direct = trust.resolve(remote, scheme, _NO_HEADERS)


_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


# Parsing an address costs about 9 us, on every request; a server listens on a few.
@functools.lru_cache(maxsize=64)
def _host_form(address: str) -> str:
    """A socket's address as a Host header names it (`[::1]`, `127.0.0.1`)."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket reached over IPv4
    return f"[{ip}]" if ip.version == 6 else str(ip)


RequestCheck = Callable[[web.Request], web.Request]


def request_check(trust: ProxyTrust, names: ServerNames) -> RequestCheck:
    """The checks as a plain function: the request to pass on (cloned behind a trusted
    proxy), or an `ApiError`. The error middleware calls it (`gateway/http_app.py`): a
    middleware of its own was one more layer of coroutines resumed on every request."""
    # The same few Host headers and local addresses come on every request.
    allows = functools.lru_cache(maxsize=256)(names.allows)

    def check(request: web.Request) -> web.Request:
        connection = request.protocol
        known = connection if isinstance(connection, KnownConnection) else None
        client = known.direct if known is not None else None
        if client is None:
            client = trust.resolve(request.remote, request.scheme, request.headers)
        request[CLIENT] = client
        if _CONTROL.search(request.path):
            raise ApiError(400, "invalid_path", "the path holds a control character")
        host = request.headers.get("Host")
        if not host:
            raise ApiError(400, "missing_host", "the request has no Host header")
        local_ip, local_port = known.local if known is not None else _local_address(request)
        if not allows(host, local_ip, local_port):
            raise ApiError(
                421,
                "unknown_host",
                "this server does not answer to that host name; see http.server_names",
            )
        if client.via_proxy:
            return request.clone(remote=client.address, scheme=client.scheme)
        return request

    return check
