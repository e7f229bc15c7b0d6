"""A lean HTTP/1.1 client for webhook POSTs: one origin, kept-alive connections.

Theory of operation. An `Origin` is one endpoint's (scheme, host, port) and its pool:
up to `limit` connections, each an asyncio `Protocol` on the running loop carrying one
request at a time (no pipelining). `post()` takes an idle connection (the most recently
used first) or opens one, writes the request head and its `Content-Length` body in one
write, and waits for `http_response.ResponseParser` to return the status. Everything,
from waiting for a pool slot through connecting and the TLS handshake to the last byte
of the response, runs under one deadline (`timeout`, the endpoint's as before).

Connections. New ones resolve the host through `CheckedResolver` (refused addresses
dropped, the connection made to a checked address) or check an IP literal directly,
and try each address in turn; HTTPS uses the endpoint's `ssl.SSLContext` (certificate
and host name verified, its CA file and client certificate) with the URL's host as the
server name. A connection goes back to the pool only after a complete response that
allows it (not `Connection: close`, not HTTP/1.0, not a body delimited by the close);
a timeout, a malformed response or a lost connection closes it. An idle connection is
closed after `IDLE_TIMEOUT` seconds, and before one is reused it is polled: one the peer
closed (or sent anything to) while idle is dropped and the request goes on another, so
a request is tried again on a fresh connection only when it was never sent. Once sent,
a failure is the delivery's (the outbox retries it; receivers drop duplicates by id).
Redirects are never followed: a 3xx is a status like any other to the caller. No proxy
is used (the aiohttp client this replaces did not read proxy settings either).

Failures raise `DeliveryFailed` with the codes the aiohttp client gave: `timeout`,
`tls_certificate`, `tls`, `address_refused`, `connect`, `http_error`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import select
import socket
import ssl
from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import quote, urlsplit

from gateway.integrations.addresses import AddressRefused, CheckedResolver, address_problem
from gateway.integrations.events import DeliveryFailed
from gateway.integrations.http_response import Response, ResponseError, ResponseParser

IDLE_TIMEOUT = 15.0  # seconds an unused connection stays open (aiohttp's default too)
CLOSE_WAIT = 1.0  # seconds `close()` waits for connections to finish closing

# RFC 3986 characters kept as they are in a request target; anything else (spaces,
# CR/LF, non-ASCII) is percent-encoded, so a URL can never split the request line.
_PATH_SAFE = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE = _PATH_SAFE + "?"


def request_target(url: str) -> bytes:
    """The path and query of `url`, percent-encoded, for the request line."""
    parts = urlsplit(url)
    target = _quote(parts.path or "/", _PATH_SAFE)
    if parts.query:
        target += "?" + _quote(parts.query, _QUERY_SAFE)
    return target.encode("ascii")


def _quote(text: str, safe: str) -> str:
    quoted = quote(text, safe=safe)
    if "%" not in text:
        return quoted
    # A '%' not starting a valid escape is a literal percent sign (as yarl reads it).
    out = []
    i = 0
    while i < len(quoted):
        ch = quoted[i]
        if ch == "%" and not _is_hex(quoted[i + 1 : i + 3]):
            out.append("%25")
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


class _Connection(asyncio.Protocol):
    """One connection: idle, or carrying one request whose answer `waiter` awaits."""

    __slots__ = ("_origin", "_poll", "gone", "idle_at", "lost", "parser", "transport", "waiter")

    def __init__(self, origin: Origin) -> None:
        self._origin = origin
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[Response] | None = None
        self.parser = ResponseParser()
        self.gone = False  # closed, lost or at end of stream: never reused
        self.idle_at = 0.0
        self._poll: Any = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN | select.POLLPRI)

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            self.close()  # bytes nobody asked for (or after a timeout): never reuse
            return
        try:
            response = self.parser.feed(data)
        except ResponseError:
            self.close()
            waiter.set_exception(DeliveryFailed("http_error"))
            return
        if response is not None:
            waiter.set_result(response)

    def eof_received(self) -> bool:
        self.gone = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            try:
                waiter.set_result(self.parser.eof())
            except ResponseError:
                waiter.set_exception(DeliveryFailed("http_error"))
        return False  # close our side too

    def connection_lost(self, exc: BaseException | None) -> None:
        self.gone = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(DeliveryFailed("http_error"))
        if not self.lost.done():
            self.lost.set_result(None)
        self._origin.forget(self)

    def reusable(self) -> bool:
        """Not closed, and nothing readable while idle (a close or stray bytes)."""
        if self.gone or self.transport is None or self.transport.is_closing():
            return False
        return self._poll is None or not self._poll.poll(0)

    def close(self) -> None:
        self.gone = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.gone = True
        if self.transport is not None:
            self.transport.abort()


class Origin:
    """The kept-alive connections to one scheme, host and port (see the module doc)."""

    def __init__(
        self,
        url: str,
        tls: ssl.SSLContext | None,
        resolver: CheckedResolver,
        *,
        limit: int,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme.lower()
        self.host = (parts.hostname or "").lower()
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self._tls = tls if self.scheme == "https" else None
        self._resolver = resolver
        self._slots = asyncio.Semaphore(limit)
        self._idle: list[_Connection] = []  # the most recently used last
        self._open: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        host = self.host.encode("idna")
        if ":" in self.host:
            host = b"[" + host + b"]"
        default = 443 if self.scheme == "https" else 80
        authority = host if self.port == default else host + b":%d" % self.port
        lines = [b"Host: " + authority]
        lines += [f"{name}: {value}".encode("latin-1") for name, value in headers]
        self._common = b"\r\n".join(lines) + b"\r\n"

    async def post(self, target: bytes, headers: bytes, body: bytes, within: float) -> int:
        """POST `body` to `target` (with `headers`, each line CRLF-terminated); the
        response status, all within `within` seconds. Raises `DeliveryFailed`."""
        request = b"".join(
            (
                b"POST ",
                target,
                b" HTTP/1.1\r\n",
                self._common,
                headers,
                b"Content-Length: %d\r\n\r\n" % len(body),
                body,
            )
        )
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(within):
                async with self._slots:
                    conn = self._take()
                    if conn is None:
                        conn = await self._connect()
                    loop = asyncio.get_running_loop()
                    waiter: asyncio.Future[Response] = loop.create_future()
                    conn.waiter = waiter
                    assert conn.transport is not None
                    conn.transport.write(request)
                    response = await waiter
                    conn.waiter = None
                    if response.keep_alive and not conn.gone:
                        conn.parser = ResponseParser()
                        conn.idle_at = loop.time()
                        self._idle.append(conn)
                        self._sweep_later(loop)
                    else:
                        conn.close()
                    conn = None
                    return response.status
        except TimeoutError:
            raise DeliveryFailed("timeout") from None
        finally:
            if conn is not None:  # failed or cancelled mid-request: state unknown
                conn.abort()

    def _take(self) -> _Connection | None:
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.reusable():
                return conn
            conn.close()  # closed by the peer while idle: the request was not sent on it
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        for host, port, family in await self._addresses():
            try:
                _, conn = await loop.create_connection(
                    lambda: _Connection(self),
                    host,
                    port,
                    family=family,
                    ssl=self._tls,
                    server_hostname=self.host if self._tls is not None else None,
                )
            except ssl.SSLCertVerificationError:
                raise DeliveryFailed("tls_certificate") from None
            except ssl.SSLError:
                raise DeliveryFailed("tls") from None
            except OSError:
                continue  # the next address, as the aiohttp connector did
            self._open.add(conn)
            return conn
        raise DeliveryFailed("connect")

    async def _addresses(self) -> list[tuple[str, int, int]]:
        try:
            ip = ipaddress.ip_address(self.host)
        except ValueError:
            pass
        else:
            if address_problem(ip, self._resolver.loopback) is not None:
                raise DeliveryFailed("address_refused")
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            return [(self.host, self.port, family)]
        try:
            answers = await self._resolver.resolve(self.host, self.port, socket.AF_UNSPEC)
        except AddressRefused:
            raise DeliveryFailed("address_refused") from None
        except OSError:
            raise DeliveryFailed("connect") from None
        return [(str(a["host"]), int(a["port"]), int(a["family"])) for a in answers]

    def _sweep_later(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sweeper is None:
            self._sweeper = loop.call_later(IDLE_TIMEOUT, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle longer than `IDLE_TIMEOUT`."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        stale_before = loop.time() - IDLE_TIMEOUT
        keep = []
        for conn in self._idle:
            if conn.idle_at <= stale_before:
                conn.close()
            else:
                keep.append(conn)
        self._idle = keep
        if keep:
            self._sweep_later(loop)

    def forget(self, conn: _Connection) -> None:
        self._open.discard(conn)

    @property
    def connections(self) -> int:
        """Connections open now (idle or carrying a request), not those closing."""
        return sum(1 for conn in self._open if not conn.gone)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._idle.clear()
        conns = list(self._open)
        for conn in conns:
            conn.close()
        if conns:
            await asyncio.wait([c.lost for c in conns], timeout=CLOSE_WAIT)
            for conn in conns:
                if not conn.lost.done():
                    conn.abort()
