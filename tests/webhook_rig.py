"""Real webhook receivers on loopback for the outbox and webhook tests.

`Receiver` is an aiohttp server that verifies every POST with `standardwebhooks` (the
reference implementation) and answers as its `mode` says: `ok`, `500`, `redirect`,
`hang` (never answers), or over TLS with a certificate the gateway cannot verify.
`hold` names event ids whose request waits until `release()` (a slow answer for one
event while the others pass). `Dribbler` answers a byte at a time. Every request is
recorded; tests wait on `arrived` (no sleeps).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.tls import generate_self_signed, server_context


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def write_secret(tmp_path: Path, name: str) -> tuple[Path, str]:
    secret = new_secret()
    path = tmp_path / f"{name}.whsec"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path, secret


class Receiver:
    def __init__(self, secret: str, mode: str = "ok", tls_dir: Path | None = None) -> None:
        self.verifier = Webhook(secret)
        self.mode = mode
        self.events: list[dict[str, Any]] = []  # verified: {"id", "path", "body"}
        self.requests = 0
        self.bad_signatures = 0
        self.arrived = asyncio.Condition()
        self._release = asyncio.Event()
        self.hold: set[str] = set()  # webhook-ids answered only after `release()`
        self._held = asyncio.Event()
        self.peers: set[tuple[str, int]] = set()  # client addresses (connections) seen
        self._tls_dir = tls_dir
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        scheme = "https" if self._tls_dir is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/hook"

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        context = None
        if self._tls_dir is not None:
            cert, key = self._tls_dir / "rx.crt", self._tls_dir / "rx.key"
            generate_self_signed(cert, key, ["127.0.0.1"])
            context = server_context(cert, key)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with self.arrived:
            self.requests += 1
            if request.transport is not None:
                peer = request.transport.get_extra_info("peername")
                self.peers.add((peer[0], peer[1]))
            self.arrived.notify_all()
        if request.headers.get("webhook-id") in self.hold:
            await self._held.wait()
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=204)  # the sender gave up on it: not received
        if self.mode == "hang":
            await self._release.wait()
        if self.mode == "500":
            return web.Response(status=500)
        if self.mode == "redirect":
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")
        try:
            self.verifier.verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=400)
        async with self.arrived:
            self.events.append(
                {
                    "id": request.headers["webhook-id"],
                    "path": request.path,
                    "body": json.loads(body),
                }
            )
            self.arrived.notify_all()
        return web.Response(status=204)

    async def wait_for(self, count: int, *, requests: bool = False) -> None:
        async with self.arrived:
            await asyncio.wait_for(
                self.arrived.wait_for(
                    lambda: (self.requests if requests else len(self.events)) >= count
                ),
                20,
            )

    def release(self) -> None:
        """Answer the held requests."""
        self._held.set()

    async def close(self) -> None:
        self._release.set()
        self._held.set()
        if self._runner is not None:
            await self._runner.cleanup()


class Dribbler:
    """Reads a request, then answers a 200 one byte per `pace` seconds: slower than
    any timeout the tests configure, so the gateway must give up on its own."""

    def __init__(self, pace: float = 0.2) -> None:
        self.pace = pace
        self.requests = 0
        self.arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> Dribbler:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            self.arrived.set()
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(self.pace)  # the peer's pacing: the fault under test
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def client_trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Any]]:
    """Start receivers (`await receivers(secret, mode, tls_dir)`); closed after the test."""
    made: list[Receiver] = []

    async def make(secret: str, mode: str = "ok", tls_dir: Path | None = None) -> Receiver:
        rx = await Receiver(secret, mode, tls_dir).start()
        made.append(rx)
        return rx

    yield make
    for rx in made:
        await rx.close()
