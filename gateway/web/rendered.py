"""A JSON answer rendered whole and written in one go (issue 16: the accept's 202).

aiohttp builds each answer through a pipeline of Python: a header multidict filled in
three passes (the response's own headers, `_prepare_headers`, then the
`on_response_prepare` signal that adds `headers.SECURITY_HEADERS`), serialised, and the
body written behind it. For one accept that was about 700 of the 4,000 bytecodes the
event loop ran and 15-50 us of its CPU (`bench/README.md`, issue 16 sixth pass).

`Rendered` is an answer the handler knows whole (a JSON body, a status): when aiohttp
prepares it, it writes the same bytes aiohttp's pipeline would have written (status
line; `Content-Type`, `Content-Length`, `Date`, `Server`; the `Connection` header
aiohttp adds for the request's HTTP version and keep-alive; the security headers,
`Cache-Control: no-store`, HSTS over HTTPS, in aiohttp's order), as one bytes object
through the request's writer, and is done. `tests/test_rendered_answer.py` holds it to
aiohttp's own answer, byte for byte but the date, for each version and keep-alive case.
Handlers whose answer streams, sets cookies, may be a HEAD's or carries headers of its
own keep `web.Response`.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time

from gateway.web.client import is_secure
from gateway.web.headers import HSTS, SECURITY_HEADERS

# After `Server`, in the order the signal leaves them: the security headers (their
# `Server` took the place of aiohttp's), then `Cache-Control`, then HSTS.
_SECURITY = "".join(f"{k}: {v}\r\n" for k, v in SECURITY_HEADERS.items() if k != "Server")
_SERVER = f"Server: {SECURITY_HEADERS['Server']}\r\n"
_TAIL = _SECURITY + "Cache-Control: no-store\r\n"
_TAIL_SECURE = _TAIL + f"Strict-Transport-Security: {HSTS}\r\n\r\n"
_TAIL += "\r\n"
# aiohttp's `Connection` header: HTTP/1.0 kept alive says so, HTTP/1.1 closing says so;
# what a version does by default goes unsaid.
_KEEP_ALIVE_10 = "Connection: keep-alive\r\n"
_CLOSE_11 = "Connection: close\r\n"


class Rendered(web.StreamResponse):
    """A complete `application/json` answer, written whole at `prepare`."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        super().__init__(status=status)
        self._json = body
        self._done = False
        self._keeping: bool | None = None
        self._written = 0

    @property
    def prepared(self) -> bool:
        return self._done

    @property
    def keep_alive(self) -> bool | None:
        return self._keeping

    @property
    def body_length(self) -> int:
        return self._written

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._done:
            return None
        version = request.version
        keep_alive = self._keeping = request.keep_alive
        if keep_alive:
            connection = _KEEP_ALIVE_10 if version == (1, 0) else ""
        else:
            connection = _CLOSE_11 if version == (1, 1) else ""
        body = self._json
        head = (
            f"HTTP/{version[0]}.{version[1]} {self.status} {self.reason}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Date: {rfc822_formatted_time()}\r\n{_SERVER}"
            f"{connection}"
            f"{_TAIL_SECURE if is_secure(request) else _TAIL}"
        )
        data = head.encode() + body
        self._done = True
        await request.writer.write(data)
        self._written = len(data)
        return None

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        raise RuntimeError("a rendered answer is written whole")

    async def write_eof(self, data: bytes = b"") -> None:
        if data:
            raise RuntimeError("a rendered answer is written whole")
