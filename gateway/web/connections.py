"""The connection layer under the app: timeouts, connection caps, parser-error answers.

Theory of operation. aiohttp's `RequestHandler` is the protocol of one connection; our
subclass adds what a slow or hostile client would otherwise get away with:

- idle: after a connection opens or an answer is sent, the next request's headers must
  be complete within `keepalive_timeout` (aiohttp's own timer, which keeps running
  while a request trickles in, so a client cannot hold a connection by never finishing);
- headers: from the first byte of a request, its headers must be complete within
  `header_timeout` (aiohttp has no such timer; `data_received` arms ours);
- body: from the end of the headers, the body must be complete within `body_timeout`;
- per address: at most `max_connections_per_address` open connections from one client
  address (a trusted proxy is exempt: it carries everybody), and at most
  `max_connections` in all, kept below the open-file limit so a flood cannot starve the
  store and the drivers of descriptors. A connection over a cap is sent a JSON 503 and
  closed at once (a client that writes its request first may see a reset instead).

A connection that overruns a timer is closed without an answer (nobody is reading it).
A request aiohttp cannot parse (a 20,000-byte header, a control character) gets the
standard JSON error with the security headers, and its bytes go neither into the
answer nor into the log: aiohttp's default answer and log line quote them.

aiohttp has no public hook for the protocol class; `GuardedServer` overrides
`web.Server.__call__`, the protocol factory, using the settings the app gave it.
"""

from __future__ import annotations

import asyncio
import resource
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from gateway.config import HttpConfig
from gateway.logs import exception_summary
from gateway.web.client import ProxyTrust
from gateway.web.errors import error_body
from gateway.web.guard import KnownConnection
from gateway.web.headers import SECURITY_HEADERS

log = structlog.get_logger("smsgw.http")

# Descriptors kept for everything but client connections: the store, SMPP links,
# modems, logs, the listening sockets.
FD_RESERVE = 128


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    max_connections: int
    max_connections_per_address: int


def limits_for(c: HttpConfig) -> Limits:
    """The guards `[http]` asks for, the total cap lowered to fit the open-file limit."""
    return Limits(
        header_timeout=c.header_timeout,
        body_timeout=c.body_timeout,
        keepalive_timeout=c.keepalive_timeout,
        max_connections=connection_cap(c.max_connections),
        max_connections_per_address=c.max_connections_per_address,
    )


def connection_cap(configured: int) -> int:
    """`configured`, lowered to fit under this process's open-file limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    room = soft - FD_RESERVE if soft > 2 * FD_RESERVE else soft // 2
    return max(1, min(configured, room))


def _raw_answer(status: int, reason: str, code: str, message: str) -> bytes:
    body = error_body(status, code, message)
    head = [
        f"HTTP/1.1 {status} {reason}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Cache-Control: no-store",
        *(f"{k}: {v}" for k, v in SECURITY_HEADERS.items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


_TOO_MANY = _raw_answer(
    503, "Service Unavailable", "too_many_connections", "too many open connections; retry later"
)


def json_error(status: int, code: str, message: str) -> web.Response:
    """The JSON error with the security headers, for answers given outside the app."""
    response = web.Response(
        status=status,
        body=error_body(status, code, message),
        content_type="application/json",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
    )
    response.force_close()
    return response


RequestHandlerFn = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def answer_expectations(handler: RequestHandlerFn) -> RequestHandlerFn:
    """Refuse an `Expect` other than `100-continue` in JSON (RFC 9110 10.1.1).

    aiohttp answers one itself, before any middleware, in plain text quoting the value
    (and with a 500 when the value is not ASCII)."""

    # A plain function handing back the handler's own coroutine: a coroutine of its own
    # here would be one more layer resumed at every await of every request.
    def handle(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        expect = request.headers.get("Expect")
        if (
            expect is not None
            and request.version >= (1, 1)
            and expect.strip().lower() != "100-continue"
        ):
            return _answered(
                json_error(417, "expectation_failed", "only Expect: 100-continue is supported")
            )
        return handler(request)

    return handle


async def _answered(response: web.StreamResponse) -> web.StreamResponse:
    return response


class GuardedServer(web.Server):
    """The protocol factory, with the connection counts the caps need."""

    def __init__(self, plain: web.Server, limits: Limits, trust: ProxyTrust) -> None:
        super().__init__(
            answer_expectations(plain.request_handler),
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )
        self.limits = limits
        self.trust = trust
        self.open = 0
        self.per_address: Counter[str] = Counter()

    def __call__(self) -> GuardedRequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, **self._kwargs)

    def admit(self, address: str) -> bool:
        if self.open >= self.limits.max_connections:
            return False
        if self.per_address[
            address
        ] >= self.limits.max_connections_per_address and not self.trust.trusts(address):
            return False
        self.open += 1
        self.per_address[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open -= 1
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]


class GuardedRequestHandler(web.RequestHandler, KnownConnection):
    """One connection, with the timers and the caps (module docstring)."""

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager
        self._address: str | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self._guard.admit(address):
            log.warning("http_connection_refused", client=address, open=self._guard.open)
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(_TOO_MANY)
            self.force_close()
            return
        self._address = address
        self.know(transport, self._guard.trust)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        # Whether the next request's headers are awaited, as it stood before this data:
        # worked out only where a header timer may be armed (an accept's request ends in
        # the data that starts it, and reading its body hands aiohttp an empty chunk).
        arm = (
            data
            and self._header_timer is None
            and (before == 0 or (self._waiter is not None and not self._waiter.done()))
        )
        super().data_received(data)
        if self._request_count != before:
            if self._header_timer is not None or self._body_timer is not None:
                self._cancel_timers()
            if self._messages:
                payload = self._messages[-1][1]
                if not payload.is_eof():
                    self._body_timer = self._loop.call_later(
                        self._guard.limits.body_timeout, self._body_overdue, payload
                    )
        elif arm and not self._force_close:
            self._header_timer = self._loop.call_later(
                self._guard.limits.header_timeout, self._headers_overdue, before
            )

    def _headers_overdue(self, count: int) -> None:
        self._header_timer = None
        if self._request_count == count and not self._force_close:
            log.info("http_header_timeout", client=self._address)
            self.force_close()

    def _body_overdue(self, payload: Any) -> None:
        self._body_timer = None
        if not payload.is_eof() and not self._force_close:
            log.info("http_body_timeout", client=self._address)
            self.force_close()

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def log_exception(self, *args: Any, **kw: Any) -> None:
        error = kw.get("exc_info")
        log.error(
            "http_protocol_error",
            error=exception_summary(error) if isinstance(error, BaseException) else "unknown",
        )

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The JSON error for a request that never reached the app (or broke it)."""
        log.info(
            "http_request_refused",
            status=status,
            reason=type(exc).__name__ if exc is not None else "none",
            client=self._address,
        )
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already under way")
        if status >= 500:
            return json_error(status, "internal", "internal error; see the gateway log")
        return json_error(status, "bad_request", "the request could not be parsed as HTTP")


# What requests still being answered get when the server stops (aiohttp's default, 60 s,
# is longer than systemd waits for the whole stop); the rest are cancelled.
HTTP_SHUTDOWN_TIMEOUT = 5.0


class GuardedAppRunner(web.AppRunner):
    """`web.AppRunner` whose server is a `GuardedServer`."""

    def __init__(
        self, app: web.Application, limits: Limits, trust: ProxyTrust, **kwargs: Any
    ) -> None:
        kwargs.setdefault("shutdown_timeout", HTTP_SHUTDOWN_TIMEOUT)
        super().__init__(app, keepalive_timeout=limits.keepalive_timeout, **kwargs)
        self.limits = limits
        self._trust = trust

    async def _make_server(self) -> web.Server:
        return GuardedServer(await super()._make_server(), self.limits, self._trust)


class GuardedTCPSite(web.TCPSite):
    """`web.TCPSite` whose TLS handshakes must finish within `header_timeout`.

    asyncio allows 60 s by default, and until the handshake is done the connection has
    not reached our protocol: it counts against no cap and runs no timer. `TCPSite`
    offers no setting for it, so `start()` is `TCPSite.start()` with the timeout added.
    """

    def __init__(self, runner: GuardedAppRunner, *args: Any, **kwargs: Any) -> None:
        super().__init__(runner, *args, **kwargs)
        self._handshake_timeout = runner.limits.header_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
            ssl_handshake_timeout=self._handshake_timeout if self._ssl_context else None,
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port
