"""The webhook client's response parser (gateway/integrations/http_response.py): every
way of framing a body, the same answer whatever the chunking of the bytes, and only
`ResponseError` for bytes that are not a response."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.integrations.http_response import (
    MAX_HEAD,
    Response,
    ResponseError,
    ResponseParser,
)


def parse(*pieces: bytes) -> Response | None:
    parser = ResponseParser()
    response = None
    for piece in pieces:
        response = parser.feed(piece) or response
    return response


def parse_to_close(data: bytes) -> Response:
    parser = ResponseParser()
    return parser.feed(data) or parser.eof()


GOOD = {
    "no body": (b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n", Response(204, True)),
    "length": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Response(200, True)),
    "empty reason": (b"HTTP/1.1 500 \r\nContent-Length: 0\r\n\r\n", Response(500, True)),
    "no reason": (b"HTTP/1.1 202\r\nContent-Length: 0\r\n\r\n", Response(202, True)),
    "chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\n\r\n",
        Response(200, True),
    ),
    "gzip then chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        Response(200, True),
    ),
    "close": (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        Response(200, False),
    ),
    "http/1.0": (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", Response(200, False)),
    "redirect": (
        b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n",
        Response(302, True),
    ),
    "interim first": (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        Response(204, True),
    ),
    "same length twice": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nok",
        Response(200, True),
    ),
    "304 with a length": (
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n",
        Response(304, True),
    ),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_well_formed_responses(name: str) -> None:
    data, expected = GOOD[name]
    assert parse(data) == expected
    # Byte by byte: the same answer, and not before the last byte.
    parser = ResponseParser()
    answers = [parser.feed(data[i : i + 1]) for i in range(len(data))]
    assert answers[-1] == expected and all(a is None for a in answers[:-1])


def test_body_until_close_ends_only_at_the_close() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\nsome body") is None
    assert parser.feed(b" more") is None
    assert parser.eof() == Response(200, False)


def test_bytes_after_the_response_make_it_not_reusable() -> None:
    data = b"HTTP/1.1 204 No Content\r\n\r\n"
    assert parse(data + b"HTTP/1.1 200 OK\r\n") == Response(204, False)
    parser = ResponseParser()
    assert parser.feed(data) == Response(204, True)
    assert parser.feed(b"x") == Response(204, False)


BAD = {
    "not http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "http/2 status line": b"HTTP/2 200\r\n\r\n",
    "no status": b"HTTP/1.1 OK\r\n\r\n",
    "short status": b"HTTP/1.1 20 OK\r\n\r\n",
    "status 099": b"HTTP/1.1 099 Odd\r\n\r\n",
    "lower-case version": b"http/1.1 200 OK\r\n\r\n",
    "control in reason": b"HTTP/1.1 200 O\x01K\r\n\r\n",
    "folded header": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n  continued\r\n\r\n",
    "space before colon": b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
    "no colon": b"HTTP/1.1 200 OK\r\nContent-Length 0\r\n\r\n",
    "bare LF in head": b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
    "negative length": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "hex length": b"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    "length and chunked": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "empty coding": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n",
    "bad chunk size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "chunk without CRLF": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"
    ),
    "bad trailer": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
    "switching protocols": b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_responses_are_refused(name: str) -> None:
    with pytest.raises(ResponseError):
        parse(BAD[name])


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-",
        b"",
    ],
)
def test_close_before_the_end_is_an_error(data: bytes) -> None:
    parser = ResponseParser()
    assert parser.feed(data) is None
    with pytest.raises(ResponseError):
        parser.eof()


def test_endless_head_is_refused() -> None:
    parser = ResponseParser()
    parser.feed(b"HTTP/1.1 200 OK\r\n")
    for _ in range((MAX_HEAD - 100) // 1009):  # just under the limit
        parser.feed(b"X-Pad: " + b"a" * 1000 + b"\r\n")
    with pytest.raises(ResponseError):
        parser.feed(b"X-Pad: " + b"a" * 1000 + b"\r\n")


def test_errors_never_quote_the_peer() -> None:
    with pytest.raises(ResponseError) as e:
        parse(b"HTTP/1.1 200 OK\r\nX-Secret-Digits 2025550123\r\n\r\n")
    assert "2025550123" not in str(e.value)


# -- properties --------------------------------------------------------------------------

token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).filter(
    lambda t: t not in ("content-length", "transfer-encoding", "connection")
)
value = st.text(alphabet="abcdefghij 0123456789;=/.", max_size=30).map(str.strip)


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, Response]:
    status = draw(st.integers(200, 599))
    headers = draw(st.lists(st.tuples(token, value), max_size=5))
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked"]))
    close = draw(st.booleans())
    head = [f"HTTP/1.1 {status} Reason Phrase".encode()]
    head += [f"{k}: {v}".encode() for k, v in headers]
    if close:
        head.append(b"Connection: close")
    if status in (204, 304):
        payload = b""
    elif framing == "length":
        head.append(b"Content-Length: %d" % len(body))
        payload = body
    else:
        head.append(b"Transfer-Encoding: chunked")
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    return b"\r\n".join(head) + b"\r\n\r\n" + payload, Response(status, not close)


@given(responses(), st.lists(st.integers(1, 50), max_size=30))
def test_any_chunking_gives_the_same_response(
    case: tuple[bytes, Response], sizes: list[int]
) -> None:
    data, expected = case
    pieces, at = [], 0
    for size in sizes:
        pieces.append(data[at : at + size])
        at += size
    pieces.append(data[at:])
    parser = ResponseParser()
    answers = [parser.feed(p) for p in pieces]
    assert answers[-1] == expected
    done = [i for i, a in enumerate(answers) if a is not None]
    assert done and sum(len(p) for p in pieces[: done[0] + 1]) == len(data)


@given(st.binary(max_size=400))
def test_garbage_is_refused_or_parsed_never_a_crash(data: bytes) -> None:
    parser = ResponseParser()
    with contextlib.suppress(ResponseError):
        if parser.feed(data) is None:
            parser.eof()


@given(responses(), st.binary(min_size=1, max_size=20), st.integers(0, 400))
def test_corrupted_responses_are_refused_or_parsed_never_a_crash(
    case: tuple[bytes, Response], noise: bytes, at: int
) -> None:
    data, _ = case
    at = min(at, len(data))
    with contextlib.suppress(ResponseError):
        parse_to_close(data[:at] + noise + data[at:])
