"""The webhook HTTP client (gateway/integrations/http_client.py) against real servers on
loopback: an aiohttp server (plain and TLS, with and without client certificates) and
a raw asyncio server that answers as each test scripts it (closing, hanging,
malformed, chunked). Kept-alive connections are reused; a request is tried on a fresh
connection only when it was never sent; a timeout or a bad answer closes the connection.
The main paths run on uvloop too (which `smsgw run` uses)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop
from aiohttp import web

from gateway.config import Config, WebhookConfig
from gateway.integrations.addresses import CheckedResolver
from gateway.integrations.events import MESSAGE_STATUS, DeliveryFailed, OutboxEvent
from gateway.integrations.http_client import Origin, request_target
from gateway.integrations.webhooks import Poster
from gateway.tls import generate_self_signed, server_context
from tests.tlsfiles import self_signed
from tests.webhook_rig import write_secret

NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
PATIENT = 20.0


class Scripted:
    """A raw HTTP server: reads each request (head and Content-Length body) and calls
    `answer(n)` (n counts requests over all connections) for what to do: bytes to
    write, then "keep" (wait for the next request), "close", or "hang" (never answer)."""

    def __init__(self, answer: Callable[[int], tuple[bytes, str]]) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self.connections = 0
        self.changed = asyncio.Condition()
        self.closed = 0  # connections this server closed or saw closed
        self.active = 0  # handlers running
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self._release = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Scripted:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _note(self, change: Callable[[], None]) -> None:
        async with self.changed:
            change()
            self.changed.notify_all()

    async def wait(self, check: Callable[[], bool]) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(check), PATIENT)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._note(lambda: setattr(self, "connections", self.connections + 1))
        self.active += 1
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                request = head + body
                await self._note(lambda: self.requests.append(request))  # noqa: B023 - awaited here
                data, then = self.answer(len(self.requests))
                writer.write(data)
                await writer.drain()
                if then == "hang":
                    await self._release.wait()
                    return
                if then == "close":
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.active -= 1
            await self._note(lambda: setattr(self, "closed", self.closed + 1))

    def shut_all(self) -> None:
        """Shut every connection down now (the FIN leaves before this returns)."""
        for writer in self._writers:
            fd = writer.get_extra_info("socket").fileno()
            with socket.socket(fileno=os.dup(fd)) as sock:  # (uvloop's has no shutdown)
                sock.shutdown(socket.SHUT_RDWR)

    async def close(self) -> None:
        self._release.set()
        await self.wait(lambda: self.active == 0)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Any]]:
    made: list[Scripted] = []

    async def make(answer: Callable[[int], tuple[bytes, str]]) -> Scripted:
        server = await Scripted(answer).start()
        made.append(server)
        return server

    yield make
    for server in made:
        await server.close()


@pytest.fixture
async def origins() -> AsyncIterator[Callable[..., Origin]]:
    made: list[Origin] = []

    def make(url: str, tls: ssl.SSLContext | None = None, limit: int = 4) -> Origin:
        origin = Origin(url, tls, CheckedResolver(True), limit=limit)
        made.append(origin)
        return origin

    yield make
    for origin in made:
        await origin.close()


async def post(origin: Origin, url: str, within: float = PATIENT) -> int:
    return await origin.post(request_target(url), b"x-test: 1\r\n", b'{"a":1}', within)


async def aiohttp_server(
    handler: Callable[[web.Request], Any], context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int, set[tuple[str, int]]]:
    peers: set[tuple[str, int]] = set()

    async def handle(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        peers.add(request.transport.get_extra_info("peername")[:2])
        await request.read()
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    return runner, runner.addresses[0][1], peers


async def test_kept_alive_connections_are_reused(origins: Callable[..., Origin]) -> None:
    async def ok(request: web.Request) -> web.Response:
        assert request.headers["Content-Length"] == "7"
        assert request.headers["Host"] == f"127.0.0.1:{request.url.port}"
        return web.Response(status=204)

    runner, port, peers = await aiohttp_server(ok)
    try:
        origin = origins(f"http://127.0.0.1:{port}/hook")
        for _ in range(5):
            assert await post(origin, f"http://127.0.0.1:{port}/hook") == 204
        assert len(peers) == 1 and origin.connections == 1
        # Side by side: one connection per request in flight, then reused.
        statuses = await asyncio.gather(*(post(origin, origin_url(port)) for _ in range(8)))
        assert statuses == [204] * 8 and origin.connections <= 4
    finally:
        await runner.cleanup()


def origin_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/hook"


async def test_server_saying_close_gets_a_fresh_connection(
    scripted: Callable[..., Any], origins: Callable[..., Origin]
) -> None:
    server: Scripted = await scripted(
        lambda n: (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "close")
    )
    origin = origins(server.url)
    for _ in range(3):
        assert await post(origin, server.url) == 200
    assert server.connections == 3 and len(server.requests) == 3


async def test_connection_closed_while_idle_is_not_used_and_nothing_is_lost(
    scripted: Callable[..., Any], origins: Callable[..., Origin]
) -> None:
    # The server closes the idle connection (its own keep-alive timeout) just before
    # the next request, too late for the event loop to have seen it: the client must
    # find it closed before sending, and send on a new connection.
    server: Scripted = await scripted(lambda n: (NO_CONTENT, "keep"))
    origin = origins(server.url)
    assert await post(origin, server.url) == 204
    server.shut_all()  # at once, with no await in between
    assert await post(origin, server.url) == 204
    assert server.connections == 2 and len(server.requests) == 2


async def test_request_sent_then_connection_lost_is_not_sent_again(
    scripted: Callable[..., Any], origins: Callable[..., Origin]
) -> None:
    # The server reads the second request and closes without answering: it may have
    # acted on it, so the client reports the failure (the outbox retries it later).
    server: Scripted = await scripted(lambda n: (b"", "close") if n == 2 else (NO_CONTENT, "keep"))
    origin = origins(server.url)
    assert await post(origin, server.url) == 204
    with pytest.raises(DeliveryFailed) as e:
        await post(origin, server.url)
    assert e.value.reason == "http_error"
    assert len(server.requests) == 2 and server.connections == 1
    # The connection after the failure is a new one, and it works.
    assert await post(origin, server.url) == 204
    assert server.connections == 2


async def test_slow_server_times_out_and_its_connection_is_dropped(
    scripted: Callable[..., Any], origins: Callable[..., Origin]
) -> None:
    server: Scripted = await scripted(
        lambda n: (b"HTTP/1.1 200 OK\r\n", "hang" if n == 1 else "keep")
    )
    origin = origins(server.url)
    with pytest.raises(DeliveryFailed) as e:
        await post(origin, server.url, within=0.3)
    assert e.value.reason == "timeout"
    assert origin.connections == 0  # a half-answered connection is dropped, never reused
    server.answer = lambda n: (NO_CONTENT, "keep")
    assert await post(origin, server.url) == 204
    assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 2OO OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
async def test_malformed_answer_fails_and_drops_the_connection(
    answer: bytes, scripted: Callable[..., Any], origins: Callable[..., Origin]
) -> None:
    server: Scripted = await scripted(lambda n: (answer if n == 1 else NO_CONTENT, "keep"))
    origin = origins(server.url)
    with pytest.raises(DeliveryFailed) as e:
        await post(origin, server.url)
    assert e.value.reason == "http_error" and str(e.value) == "http_error"
    assert await post(origin, server.url) == 204
    assert server.connections == 2


async def test_chunked_answer_is_read_and_the_connection_reused(
    scripted: Callable[..., Any], origins: Callable[..., Origin]
) -> None:
    chunked = (
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\nwiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    server: Scripted = await scripted(lambda n: (chunked, "keep"))
    origin = origins(server.url)
    assert [await post(origin, server.url) for _ in range(3)] == [202] * 3
    assert server.connections == 1


async def test_body_until_close_is_read_and_not_reused(
    scripted: Callable[..., Any], origins: Callable[..., Origin]
) -> None:
    server: Scripted = await scripted(lambda n: (b"HTTP/1.1 200 OK\r\n\r\nall of it", "close"))
    origin = origins(server.url)
    assert await post(origin, server.url) == 200
    assert await post(origin, server.url) == 200
    assert server.connections == 2


async def test_redirect_is_not_followed(tmp_path: Path, scripted: Callable[..., Any]) -> None:
    target: Scripted = await scripted(lambda n: (NO_CONTENT, "keep"))
    moved = (
        f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {target.url}\r\nContent-Length: 0\r\n\r\n"
    )
    server: Scripted = await scripted(lambda n: (moved.encode(), "keep"))
    poster = poster_for(tmp_path, server.url)
    try:
        with pytest.raises(DeliveryFailed) as e:
            await poster.post(server.url, event(), False)
        assert e.value.reason == "redirect_refused"
        assert len(server.requests) == 1 and target.requests == []
    finally:
        await poster.close()


def poster_for(tmp_path: Path, url: str, **keys: Any) -> Poster:
    secret, _ = write_secret(tmp_path, "hook")
    hook = WebhookConfig(
        name="rx",
        url=url,
        secret_file=str(secret),
        allow_loopback=True,
        allow_plain_http=True,
        **keys,
    )
    return Poster(hook, Config(data_dir=str(tmp_path)))


def event() -> OutboxEvent:
    return OutboxEvent(id="evt_1", seq=1, type=MESSAGE_STATUS, at=1.7e9, data={"state": "sent"})


async def test_callback_path_cannot_split_the_request_line(
    tmp_path: Path, scripted: Callable[..., Any]
) -> None:
    server: Scripted = await scripted(lambda n: (NO_CONTENT, "keep"))
    poster = poster_for(tmp_path, server.url)
    try:
        origin = server.url.removesuffix("/hook")
        await poster.post(origin + "/cb/a b\r\nX-Injected: 1?q=1 2%zz%41", event(), False)
        (request,) = server.requests
        line, *headers = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
        # (urlsplit drops CR, LF and tab; what is left is percent-encoded.)
        assert line == b"POST /cb/a%20bX-Injected:%201?q=1%202%25zz%41 HTTP/1.1"
        assert not any(h.lower().startswith(b"x-injected") for h in headers)
    finally:
        await poster.close()


async def test_link_local_literal_is_refused_without_connecting(
    origins: Callable[..., Origin],
) -> None:
    origin = Origin("http://169.254.169.254/", None, CheckedResolver(False), limit=1)
    with pytest.raises(DeliveryFailed) as e:
        await post(origin, "http://169.254.169.254/latest/meta-data/")
    assert e.value.reason == "address_refused"
    loopback = Origin("http://127.0.0.1:9/", None, CheckedResolver(False), limit=1)
    with pytest.raises(DeliveryFailed) as e:
        await post(loopback, "http://127.0.0.1:9/")
    assert e.value.reason == "address_refused"


async def test_refused_connection_is_a_connect_failure(origins: Callable[..., Origin]) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(DeliveryFailed) as e:
        await post(origins(origin_url(port)), origin_url(port))
    assert e.value.reason == "connect"


# -- TLS -------------------------------------------------------------------------------


async def test_tls_verified_reused_and_client_certificate_sent(tmp_path: Path) -> None:
    cert, key = tmp_path / "rx.crt", tmp_path / "rx.key"
    generate_self_signed(cert, key, ["127.0.0.1"])
    client_cert, client_key = self_signed(tmp_path, "client", "smsgw")
    context = server_context(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the receiver asks for ours
    context.load_verify_locations(cafile=str(client_cert))
    seen: list[str] = []

    async def ok(request: web.Request) -> web.Response:
        assert request.transport is not None
        peer = request.transport.get_extra_info("peercert")
        seen.append(dict(x[0] for x in peer["subject"])["commonName"])
        return web.Response(status=204)

    runner, port, peers = await aiohttp_server(ok, context)
    url = f"https://127.0.0.1:{port}/hook"
    mutual = poster_for(
        tmp_path,
        url,
        ca_file=str(cert),
        client_cert_file=str(client_cert),
        client_key_file=str(client_key),
    )
    anonymous = poster_for(tmp_path, url, ca_file=str(cert))
    untrusting = poster_for(tmp_path, url)
    try:
        for _ in range(3):
            await mutual.post(url, event(), False)
        assert seen == ["smsgw"] * 3 and len(peers) == 1
        with pytest.raises(DeliveryFailed) as e:
            await untrusting.post(url, event(), False)
        assert e.value.reason == "tls_certificate"
        with pytest.raises(DeliveryFailed) as e:
            await anonymous.post(url, event(), False)
        assert e.value.reason in ("tls", "http_error")  # refused in or right after the handshake
        assert len(seen) == 3
    finally:
        for poster in (mutual, anonymous, untrusting):
            await poster.close()
        await runner.cleanup()


async def _uvloop_paths(tmp_path: Path) -> None:
    server = await Scripted(lambda n: (NO_CONTENT, "keep")).start()
    origin = Origin(server.url, None, CheckedResolver(True), limit=2)
    cert, key = tmp_path / "rx.crt", tmp_path / "rx.key"
    generate_self_signed(cert, key, ["127.0.0.1"])

    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=204)

    runner, port, peers = await aiohttp_server(ok, server_context(cert, key))
    url = f"https://127.0.0.1:{port}/hook"
    tls = poster_for(tmp_path, url, ca_file=str(cert))
    try:
        assert [await post(origin, server.url) for _ in range(3)] == [204] * 3
        assert server.connections == 1
        server.shut_all()
        assert await post(origin, server.url) == 204  # not sent on the closed one
        assert server.connections == 2
        server.answer = lambda n: (b"HTTP/1.1 2OO OK\r\n\r\n", "keep")
        with pytest.raises(DeliveryFailed, match="http_error"):
            await post(origin, server.url)
        server.answer = lambda n: (b"", "hang")
        with pytest.raises(DeliveryFailed, match="timeout"):
            await post(origin, server.url, within=0.3)
        for _ in range(3):
            await tls.post(url, event(), False)
        assert len(peers) == 1
    finally:
        await tls.close()
        await origin.close()
        await server.close()
        await runner.cleanup()


def test_the_main_paths_on_uvloop(tmp_path: Path) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(_uvloop_paths(tmp_path), PATIENT))
