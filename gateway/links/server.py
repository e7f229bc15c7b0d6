"""The redirect listener: `GET /<token>` on the hospital's short host, nothing else.

Its own listener (`links.listen`), not a route of the API's: the short host faces
patients' phones on the internet, and only this one path should be reachable there;
the API and the panel stay on the internal listener. No session, no token: the
short URL is the whole credential. A front end that only translates: the use case
(`Gateway.links.follow`) decides where a token leads and records the click.

Answers: `302` to the stored destination (`Cache-Control: no-store`, `Referrer-Policy:
no-referrer`), with no body; the same `302` to `links.fallback_url`, or a small
"link expired" page (`410`), for an unknown, expired or no longer allowed token;
`429` once a source (an IPv4 /24, an IPv6 /48) passes `links.requests_per_minute`,
so a scanner hammering a link, or guessing tokens, neither inflates the counts nor
learns anything quickly. Nothing is logged with a token; there is no access log.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict

from aiohttp import web

from gateway.app import Gateway
from gateway.links.usecase import Links
from gateway.ratelimit import TokenBucket
from gateway.web import headers
from gateway.web.client import ProxyTrust, client_address
from gateway.web.connections import GuardedAppRunner, limits_for

MAX_SOURCES = 10_000  # buckets kept; the least recently seen source is forgotten first
REDIRECT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
GONE_PAGE = (
    "<!doctype html><html lang=en><head><meta charset=utf-8>"
    "<meta name=viewport content='width=device-width, initial-scale=1'>"
    "<title>Link expired</title></head><body><main><h1>This link has expired</h1>"
    "<p>The link in your message is no longer valid. Please contact the hospital"
    " if you still need the information.</p></main></body></html>"
)


def source_of(address: str) -> str:
    """The rate limit's unit: an IPv4 /24 or an IPv6 /48 (one home or one NAT)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


class SourceLimiter:
    """A token bucket per source, at most `MAX_SOURCES` of them (LRU)."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self._rate = per_minute / 60.0
        self._burst = burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, source: str, now: float) -> float:
        """0 if this request may go on, else the seconds until one may."""
        bucket = self._buckets.pop(source, None) or TokenBucket(self._rate, self._burst, now)
        self._buckets[source] = bucket
        if len(self._buckets) > MAX_SOURCES:
            self._buckets.popitem(last=False)
        return 0.0 if bucket.try_take(now) else max(bucket.wait_time(now), 0.001)


LINKS = web.AppKey("links", Links)
LIMITER = web.AppKey("links_limiter", SourceLimiter)


async def follow(request: web.Request) -> web.StreamResponse:
    links = request.app[LINKS]
    wait = request.app[LIMITER].take(source_of(client_address(request)), links.clock.monotonic())
    if wait:
        links.limited()
        return web.Response(
            status=429,
            text="Too many requests\n",
            headers={"Retry-After": str(math.ceil(wait))},
        )
    followed = await links.follow(request.match_info["token"], request.method, request.headers)
    if followed.location is None:
        return web.Response(status=410, text=GONE_PAGE, content_type="text/html")
    return web.Response(status=302, headers={"Location": followed.location, **REDIRECT_HEADERS})


async def not_found(request: web.Request) -> web.StreamResponse:
    return web.Response(status=404, text="Not found\n")


def build_app(gateway: Gateway) -> web.Application:
    app = web.Application(client_max_size=1024)
    c = gateway.config.links
    app[LINKS] = gateway.links
    app[LIMITER] = SourceLimiter(c.requests_per_minute, c.request_burst)
    # HEAD is answered by the GET route (aiohttp), with the method passed on: counted
    # as a non-human click, and no body.
    app.router.add_get("/{token:[A-Za-z0-9]{1,64}}", follow)
    app.router.add_route("*", "/{tail:.*}", not_found)
    headers.install(app)
    return app


def build_runner(gateway: Gateway, app: web.Application | None = None) -> GuardedAppRunner:
    """The listener's runner, with the API's slow-client and connection guards."""
    c = gateway.config.http
    return GuardedAppRunner(
        app or build_app(gateway),
        limits_for(c),
        ProxyTrust(c.trusted_proxies, c.proxy_headers),
        handle_signals=False,
        access_log=None,  # a path here is a token
    )
