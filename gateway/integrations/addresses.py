"""Where the gateway may POST: the no-arbitrary-URL rule for webhooks and callbacks.

Hospital systems live on private networks, so private addresses are allowed; what is
refused is what an attacker would aim a callback at: link-local addresses (which hold
cloud metadata services, 169.254.169.254 and fd00:ec2::254), loopback unless the
endpoint says so, and unspecified, multicast or reserved addresses. Names are checked
twice: IP literals at config load, and every resolved address at connect time by
`CheckedResolver`, whose answer is the address the webhook client (`http_client.py`)
then connects to (the check and the connection use the same address, so a DNS answer
that changes in between — DNS rebinding — cannot slip past); the client checks IP
literals again itself.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

_METADATA = {ipaddress.ip_address("fd00:ec2::254")}


class AddressRefused(OSError):
    """A webhook host resolved to an address the gateway does not POST to."""


def address_problem(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, loopback: bool
) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None if loopback else "a loopback address (set allow_loopback to permit)"
    if ip.is_link_local or ip in _METADATA:
        return "a link-local or metadata address"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "an unspecified, multicast or reserved address"
    return None


def origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port filled in; None if no URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        return None
    return scheme, host, port if port is not None else (443 if scheme == "https" else 80)


def url_problem(url: str, loopback: bool, plain_http: bool) -> str | None:
    """Why this endpoint URL is refused (never quoting it), or None."""
    parts = origin(url)
    if parts is None:
        return "expected an http:// or https:// URL with a host"
    scheme, host, _ = parts
    if urlsplit(url).username is not None:
        return "credentials in the URL are refused (use the secret file)"
    if scheme == "http" and not plain_http:
        return "plain http is refused (use https, or set allow_plain_http)"
    if host == "localhost" or host.endswith(".localhost"):
        return None if loopback else "a loopback address (set allow_loopback to permit)"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: its addresses are checked when it is resolved
    return address_problem(ip, loopback)


class CheckedResolver(AbstractResolver):
    """Resolves as usual, then drops every refused address; none left raises."""

    def __init__(self, loopback: bool) -> None:
        self._inner = DefaultResolver()
        self.loopback = loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        allowed = [a for a in answers if self.allowed(a)]
        if not allowed:
            raise AddressRefused("every address of the webhook host is refused")
        return allowed

    def allowed(self, answer: dict[str, Any] | ResolveResult) -> bool:
        try:
            ip = ipaddress.ip_address(str(answer["host"]).split("%", 1)[0])
        except ValueError:
            return False
        return address_problem(ip, self.loopback) is None

    async def close(self) -> None:
        await self._inner.close()
