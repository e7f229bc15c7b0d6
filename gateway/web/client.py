"""Who the client is: its address and scheme, believing a proxy only when configured to.

Behind a TLS-terminating proxy every connection comes from the proxy, over plain HTTP.
The proxy says who the client was in `X-Forwarded-For`/`X-Forwarded-Proto` (or in
RFC 7239 `Forwarded`, per `http.proxy_headers`); anybody can send those headers, so
they are read only when the connection's peer is in `http.trusted_proxies`, and only
the header kind the proxy writes is read (a proxy that writes `X-Forwarded-For` passes
a client's own `Forwarded` through untouched).

The address is found from the right of the list: each trusted hop appended the address
it saw, so the first untrusted one from the right is the client; what lies further left
was written by the client and is not believed. `resolve()` runs once per request (in
`guard.py`); sign-in throttling and the audit take the address through
`client_address()`, cookies and HSTS the scheme through `is_secure()`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from multidict import CIMultiDictProxy

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ProxyHeaders = Literal["x-forwarded", "forwarded"]


@dataclass(frozen=True, slots=True)
class Client:
    address: str
    scheme: str
    via_proxy: bool


CLIENT: web.RequestKey[Client] = web.RequestKey("client", Client)


def _ip(text: str) -> IpAddress | None:
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]  # `[2001:db8::1]:4711` in `Forwarded`
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # `192.0.2.1:4711`
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
    return ip


_DIRECT_KEPT = 4096


class ProxyTrust:
    """The configured proxies, and how to read what they say."""

    def __init__(self, proxies: Iterable[str], headers: ProxyHeaders = "x-forwarded") -> None:
        self.networks: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in proxies
        )
        self.headers = headers
        self._direct: dict[tuple[str | None, str], Client] = {}  # peers not behind a proxy

    def trusts(self, address: str | None) -> bool:
        if not self.networks or address is None:
            return False
        ip = _ip(address)
        return ip is not None and any(ip in net for net in self.networks)

    def resolve(self, peer: str | None, scheme: str, headers: CIMultiDictProxy[str]) -> Client:
        """The client behind `peer`, which connected over `scheme`."""
        if not self.trusts(peer):
            # Every request asks; a frozen dataclass costs 0.6 us to build, a hit 0.1.
            key = (peer, scheme)
            kept = self._direct.get(key)
            if kept is None:
                if len(self._direct) >= _DIRECT_KEPT:
                    self._direct.clear()
                kept = self._direct[key] = Client(peer or "unknown", scheme, False)
            return kept
        assert peer is not None
        hops, protos = self._read(headers)
        address = peer
        for hop in reversed(hops):
            ip = _ip(hop)
            if ip is None:
                break  # garbage from the proxy: keep the last address that was vouched for
            address = str(ip)
            if not self.trusts(address):
                break
        proto = protos[-1].strip().strip('"').lower() if protos else ""
        return Client(address, proto if proto in ("http", "https") else scheme, True)

    def _read(self, headers: CIMultiDictProxy[str]) -> tuple[list[str], list[str]]:
        if self.headers == "forwarded":
            hops: list[str] = []
            protos: list[str] = []
            for value in headers.getall("Forwarded", ()):
                for element in value.split(","):
                    for pair in element.split(";"):
                        name, _, text = pair.strip().partition("=")
                        if name.lower() == "for":
                            hops.append(text)
                        elif name.lower() == "proto":
                            protos.append(text)
            return hops, protos
        return (
            [h for v in headers.getall("X-Forwarded-For", ()) for h in v.split(",")],
            [p for v in headers.getall("X-Forwarded-Proto", ()) for p in v.split(",")],
        )


def client_address(request: web.BaseRequest) -> str:
    """The client's address: the peer, or what a trusted proxy says the peer was."""
    found = request.get(CLIENT)
    return found.address if isinstance(found, Client) else request.remote or "unknown"


def is_secure(request: web.BaseRequest) -> bool:
    """HTTPS end to end as far as we can tell: our TLS, or a trusted proxy's."""
    try:  # not `request.get`: Mapping.get is Python, calling __getitem__ (every response)
        found = request[CLIENT]
    except KeyError:
        return request.secure
    return found.scheme == "https" if isinstance(found, Client) else request.secure
