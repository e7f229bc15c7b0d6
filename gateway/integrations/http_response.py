"""An HTTP/1.1 response parser with no I/O, for the webhook client (`http_client.py`).

Theory of operation. `feed(data)` takes bytes as they arrive and returns the `Response`
once one is complete (None until then); `eof()` says the peer closed, which completes a
body delimited by the close and is an error anywhere else. The parser reads one
response to one request (no pipelining): 1xx interim responses are skipped, and bytes
after the final response make it not reusable (`keep_alive` False). Only what a sender
needs is kept: the status and whether the connection may carry another request. The
body is read and dropped (framed per RFC 9112 section 6.3: none for 1xx/204/304, chunked
when `Transfer-Encoding` ends in `chunked`, `Content-Length`, else until the close).

Strict: a status line `HTTP/1.x NNN [reason]`, header lines `token ":" value` (no
obs-fold, no control characters, CRLF line ends), one agreed `Content-Length` of digits,
not together with `Transfer-Encoding`, chunk sizes in hex with CRLF after each chunk; a
head over `MAX_HEAD` bytes or a chunk line over `MAX_LINE` is refused. Anything else
raises `ResponseError` and the connection is dropped. The peer's bytes are never
quoted in the error (a receiver's answer is not ours to log).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEAD = 65536
MAX_LINE = 4096

_STATUS = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9]{2})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
_HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
_CHUNK = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\x00-\x08\x0a-\x1f\x7f]*)?")

# States.
_HEAD = 0
_LENGTH = 1  # `_left` body bytes to go
_CHUNK_LINE = 2
_CHUNK_DATA = 3  # `_left` chunk bytes to go
_CHUNK_END = 4  # the CRLF after a chunk
_TRAILERS = 5
_UNTIL_CLOSE = 6
_DONE = 7


class ResponseError(Exception):
    """The peer's bytes are not an HTTP/1.1 response (the reason never quotes them)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    keep_alive: bool  # the connection may carry another request


class ResponseParser:
    __slots__ = ("_buf", "_keep_alive", "_left", "_response", "_state", "_status")

    def __init__(self) -> None:
        self._buf = b""
        self._state = _HEAD
        self._left = 0
        self._status = 0
        self._keep_alive = False
        self._response: Response | None = None

    def feed(self, data: bytes) -> Response | None:
        if self._state == _DONE:
            if data:
                self._keep_alive = False  # bytes nobody asked for: never reuse
                self._response = Response(self._status, False)
            return self._response
        buf = self._buf + data if self._buf else data
        self._buf = b""
        while True:
            state = self._state
            if state == _HEAD:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise ResponseError("response head too long")
                    self._buf = buf
                    return None
                if end > MAX_HEAD:
                    raise ResponseError("response head too long")
                self._head(buf[:end])
                buf = buf[end + 4 :]
            elif state == _LENGTH:
                if len(buf) < self._left:
                    self._left -= len(buf)
                    return None
                buf = buf[self._left :]
                self._finish()
            elif state == _CHUNK_LINE:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_LINE:
                        raise ResponseError("chunk size line too long")
                    self._buf = buf
                    return None
                match = _CHUNK.fullmatch(buf, 0, end)
                if match is None:
                    raise ResponseError("malformed chunk size")
                size = int(match[1], 16)
                buf = buf[end + 2 :]
                if size:
                    self._left, self._state = size, _CHUNK_DATA
                else:
                    self._state = _TRAILERS
            elif state == _CHUNK_DATA:
                if len(buf) < self._left:
                    self._left -= len(buf)
                    return None
                buf = buf[self._left :]
                self._state = _CHUNK_END
            elif state == _CHUNK_END:
                if len(buf) < 2:
                    if buf not in (b"", b"\r"):
                        raise ResponseError("chunk not followed by CRLF")
                    self._buf = buf
                    return None
                if buf[:2] != b"\r\n":
                    raise ResponseError("chunk not followed by CRLF")
                buf = buf[2:]
                self._state = _CHUNK_LINE
            elif state == _TRAILERS:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise ResponseError("trailers too long")
                    self._buf = buf
                    return None
                if end and _HEADER.fullmatch(buf, 0, end) is None:
                    raise ResponseError("malformed trailer line")
                buf = buf[end + 2 :]
                if not end:
                    self._finish()
            elif state == _UNTIL_CLOSE:
                return None
            else:  # _DONE
                if buf:
                    self._keep_alive = False
                self._response = Response(self._status, self._keep_alive)
                return self._response

    def eof(self) -> Response:
        """The peer closed: the response, if that completed it; else `ResponseError`."""
        if self._state == _UNTIL_CLOSE:
            self._state = _DONE
            self._response = Response(self._status, False)
        if self._response is None:
            raise ResponseError("connection closed before the response ended")
        return self._response

    def _finish(self) -> None:
        self._state = _DONE

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status = _STATUS.fullmatch(lines[0])
        if status is None:
            raise ResponseError("malformed status line")
        code = int(status[2])
        length: bytes | None = None
        chunked = False
        coded = False
        close = status[1] == b"0"
        for line in lines[1:]:
            header = _HEADER.fullmatch(line)
            if header is None:
                raise ResponseError("malformed header line")
            name = header[1].lower()
            if name == b"content-length":
                value = header[2]
                for part in value.split(b","):
                    part = part.strip(b" \t")
                    if not part.isdigit() or len(part) > 18 or (length not in (None, part)):
                        raise ResponseError("bad Content-Length")
                    length = part
            elif name == b"transfer-encoding":
                codings = [c.strip(b" \t").lower() for c in header[2].split(b",")]
                if not all(codings):
                    raise ResponseError("bad Transfer-Encoding")
                coded = True
                chunked = codings[-1] == b"chunked"
            elif name == b"connection":
                tokens = {t.strip(b" \t").lower() for t in header[2].split(b",")}
                if b"close" in tokens:
                    close = True
                elif status[1] == b"0" and b"keep-alive" in tokens:
                    close = False
        if coded and length is not None:
            raise ResponseError("both Content-Length and Transfer-Encoding")
        if code < 200:
            if code == 101:
                raise ResponseError("unrequested protocol switch")
            return  # interim: the final response follows (state stays _HEAD)
        self._status = code
        self._keep_alive = not close
        if code in (204, 304):
            self._state = _DONE
        elif coded:
            if chunked:
                self._state = _CHUNK_LINE
            else:
                self._state, self._keep_alive = _UNTIL_CLOSE, False
        elif length is not None:
            self._left = int(length)
            self._state = _LENGTH if self._left else _DONE
        else:
            self._state, self._keep_alive = _UNTIL_CLOSE, False
