"""`[links]`: the hospital-owned short host, the destination allowlist, expiry, and the
redirect listener (gateway/links/server.py). Off unless `enabled`."""

from __future__ import annotations

import ipaddress
from typing import Annotated

import msgspec

from gateway.links.allowlist import Allowlist, rule_problem, url_host

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


class LinksConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    # The short URLs' origin, `https://go.example-hospital.org`: a host the hospital
    # owns (never a public shortener, which carriers' spam filters block), proxied to
    # `listen`. Plain http only for a loopback host (a demo on this machine).
    base_url: str = ""
    # The redirect listener: only `/<token>` is served there, so the public short host
    # never exposes the API or the panel.
    listen: str = "127.0.0.1:8081"
    # Destinations: a host (`www.example-hospital.org`, any https path on it; `*.` in
    # front for its subdomains, not itself) or a URL prefix (`https://portal.example.org/flu/`).
    allow: tuple[str, ...] = ()
    expiry_days: Annotated[float, msgspec.Meta(gt=0, le=3650)] = 90.0
    token_length: Annotated[int, msgspec.Meta(ge=10, le=32)] = 16
    # Where an unknown, expired or no longer allowed token goes (on the allowlist);
    # without one such a token gets a small "link expired" page (410).
    fallback_url: str | None = None
    # Per source (an IPv4 /24 or an IPv6 /48): requests a minute, and a burst.
    requests_per_minute: PositiveInt = 30
    request_burst: PositiveInt = 10

    @property
    def allowlist(self) -> Allowlist:
        return Allowlist.parse(self.allow)

    def problems(self) -> str | None:
        """The first bad key, as `links.key: problem`."""
        from gateway.config import listen_problem  # no import cycle at load

        if problem := listen_problem(self.listen):
            return f"links.listen: {problem}"
        for i, rule in enumerate(self.allow):
            if problem := rule_problem(rule):
                return f"links.allow[{i}]: {problem}"
        if not self.enabled:
            return None
        if problem := _base_problem(self.base_url):
            return f"links.base_url: {problem}"
        if not self.allow:
            return "links.allow: name at least one destination host or URL prefix"
        if self.fallback_url is not None and (problem := self.allowlist.problem(self.fallback_url)):
            return f"links.fallback_url: {problem}"
        return None


def _base_problem(url: str) -> str | None:
    if not url:
        return 'missing; the short host, e.g. "https://go.example-hospital.org"'
    scheme, _, rest = url.partition("://")
    host = url_host(url)
    if host is None or rest.rstrip("/") != rest.split("/")[0] or "@" in rest:
        return "expected scheme://host[:port] with no path, query or user name"
    if scheme == "https":
        return None
    if scheme == "http" and _loopback(host):
        return None
    return "must be https (plain http only for a loopback host)"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# `make run`: short links on this machine, to the demo hospital's site.
DEMO_LINKS = {
    "enabled": True,
    "base_url": "http://127.0.0.1:8081",
    "listen": "127.0.0.1:8081",
    "allow": ["www.example-hospital.org"],
}
