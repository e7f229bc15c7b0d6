"""A rendered answer (`gateway/web/rendered.py`) is aiohttp's own answer, byte for byte
but the date: for HTTP/1.1 and 1.0, kept alive or closing, over HTTP and HTTPS (HSTS)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp import web

from gateway.web import headers
from gateway.web.client import CLIENT, Client
from gateway.web.context import json_response
from gateway.web.rendered import Rendered

ANSWER = {"id": "06H542BB6G0NHZ9MMRJFZMKWTR", "status": "queued", "priority": "normal"}
_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


def _app() -> web.Application:
    def client_of(request: web.Request) -> None:
        if request.headers.get("X-Test-Scheme") == "https":  # as a trusted proxy's
            request[CLIENT] = Client("10.0.0.1", "https", True)

    async def aiohttps(request: web.Request) -> web.StreamResponse:
        client_of(request)
        return json_response(ANSWER, status=202)

    async def rendered(request: web.Request) -> web.StreamResponse:
        client_of(request)
        return Rendered(msgspec.json.encode(ANSWER), status=202)

    app = web.Application()
    app.router.add_post("/aiohttp", aiohttps)
    app.router.add_post("/rendered", rendered)
    headers.install(app)
    return app


@pytest.fixture
async def port() -> AsyncIterator[int]:
    runner = web.AppRunner(_app(), access_log=None, handle_signals=False)
    await runner.setup()
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    await web.SockSite(runner, listening).start()
    yield listening.getsockname()[1]
    await runner.cleanup()


def _exchange(port: int, path: str, version: str, extra: str, again: bool) -> tuple[bytes, bytes]:
    """One request's answer, and what the connection gives after it: a second answer
    when `again` (kept alive), else whatever comes before the server closes."""
    request = (
        f"POST {path} HTTP/{version}\r\nHost: 127.0.0.1\r\n{extra}Content-Length: 2\r\n\r\n{{}}"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answers = sock.makefile("rb")
        first = _read_answer(answers)
        if again:
            sock.sendall(request)
            return first, _read_answer(answers)
        return first, answers.read()  # b"" once the server closed the connection


def _read_answer(answers: socket.SocketIO | object) -> bytes:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = answers.readline()  # type: ignore[attr-defined]
        assert line, "the connection closed mid-answer"
        head += line
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    return head + answers.read(length)  # type: ignore[attr-defined, no-any-return]


CASES = [
    ("1.1", "", True),
    ("1.1", "Connection: close\r\n", False),
    ("1.0", "", False),
    ("1.0", "Connection: keep-alive\r\n", True),
    ("1.1", "X-Test-Scheme: https\r\n", True),
    ("1.0", "X-Test-Scheme: https\r\n", False),
]


@pytest.mark.parametrize(("version", "extra", "kept"), CASES)
async def test_a_rendered_answer_is_aiohttps_answer(
    port: int, version: str, extra: str, kept: bool
) -> None:
    theirs = await asyncio.to_thread(_exchange, port, "/aiohttp", version, extra, kept)
    ours = await asyncio.to_thread(_exchange, port, "/rendered", version, extra, kept)
    for answer in (*theirs, *ours):
        assert _DATE.search(answer) or answer == b""
    assert [_DATE.sub(b"\r\nDate: -\r\n", a) for a in ours] == [
        _DATE.sub(b"\r\nDate: -\r\n", a) for a in theirs
    ]
    assert ours[1] != b"" if kept else ours[1] == b""
    assert (b"Strict-Transport-Security" in ours[0]) == ("https" in extra)
