"""A real `smsgw run` probed over raw sockets: parser errors and a fuzzer (issue 10, 7-8).

Malformed requests never reach a handler; aiohttp answers them itself, by default in
plain text quoting the request's bytes, and logs a traceback that quotes them again.
Both must take the gateway's JSON error and security headers, and say nothing of what
was sent. No request at all, however odd its path, query or headers, may make a 500.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.web.headers import SECURITY_HEADERS
from tests.http_daemon import Daemon, exchange, running, split_response

CANARY = "CANARY-7f3a9c"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with running(tmp_path_factory.mktemp("daemon")) as d:
        yield d


def _request(method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _assert_standard_error(raw: bytes, status: int) -> dict[str, str]:
    got, headers, body = split_response(raw)
    assert got == status, raw[:300]
    assert headers["content-type"].startswith("application/json")
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name.lower()) == value, name
    error: dict[str, str] = json.loads(body)["error"]
    assert set(error) >= {"code", "message"}
    return error


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Idempotency-Key", CANARY + "K" * 20_000),  # past aiohttp's 8,190-byte limit
        ("X-Note", CANARY + "\x01"),  # a control character in a value
        (CANARY + "\x7f", "x"),  # a bad header name
    ],
)
def test_parser_errors_answer_json_without_echo_or_leak(
    daemon: Daemon, name: str, value: str
) -> None:
    raw = exchange(daemon.port, _request("POST", "/api/v1/messages", [(name, value)], b"{}"))
    error = _assert_standard_error(raw, 400)
    assert error["code"] == "bad_request"
    assert CANARY.encode() not in raw
    # The refusal is logged (through the JSON pipeline) and the canary nowhere.
    daemon.wait_log(lambda e: e.get("event") == "http_request_refused")
    assert CANARY not in daemon.stderr()
    assert "Traceback" not in daemon.stderr()


def test_a_request_line_too_long_is_answered_in_json(daemon: Daemon) -> None:
    raw = exchange(daemon.port, _request("GET", "/api/v1/messages?to=" + CANARY * 2000, []))
    _assert_standard_error(raw, 400)
    assert CANARY.encode() not in raw
    assert CANARY not in daemon.stderr()


@pytest.mark.parametrize("value", [CANARY, CANARY + "\x80"])
def test_an_unknown_expectation_is_refused_in_json(daemon: Daemon, value: str) -> None:
    """aiohttp answers `Expect` itself, before any middleware: text quoting the value,
    or a 500 when the value is not ASCII."""
    raw = exchange(daemon.port, _request("GET", "/api/v1/healthz", [("Expect", value)]))
    assert _assert_standard_error(raw, 417)["code"] == "expectation_failed"
    assert CANARY.encode() not in raw


@pytest.mark.parametrize(
    "target", ["/static/app.js%00.png", "/static/%00", "/api/v1/messages/%00", "/login%0a"]
)
def test_control_characters_in_the_path_are_refused_not_crashed(
    daemon: Daemon, target: str
) -> None:
    raw = exchange(daemon.port, _request("GET", target, []))
    error = _assert_standard_error(raw, 400)
    assert error["code"] == "invalid_path"


# -- the fuzzer --------------------------------------------------------------------------

_PREFIXES = [
    "/",
    "/api/v1/messages",
    "/api/v1/messages/",
    "/api/v1/messages/batch",
    "/api/v1/inbound",
    "/api/v1/routes/demo/pause",
    "/api/v1/healthz",
    "/api/v1/metrics",
    "/api/v1/openapi.json",
    "/static/",
    "/static/vendor/",
    "/login",
    "/login/totp",
    "/messages/",
    "/audit",
]
# Percent-escapes a path can hold, odd ones included (NUL, CR, invalid UTF-8, unfinished).
_ESCAPES = ["%00", "%0a", "%0d", "%ff", "%c0%af", "%2e%2e", "%2f", "%", "%zz", "%25", "..", "//"]
_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20).map(
    lambda t: quote(t, safe="/;=&+,:@!$'()*")
)
_SEGMENT = st.one_of(_TEXT, st.sampled_from(_ESCAPES), st.sampled_from(string.printable[:62]))
_PATH = st.tuples(st.sampled_from(_PREFIXES), st.lists(_SEGMENT, max_size=4)).map(
    lambda p: p[0] + "".join(p[1])
)
_QUERY = st.lists(
    st.tuples(
        st.sampled_from(["to", "status", "priority", "limit", "cursor", "since", "until", "x"]),
        st.one_of(_TEXT, st.sampled_from(_ESCAPES), _TEXT.map(lambda t: CANARY + t)),
    ),
    max_size=4,
).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs))
# Header values: any latin-1 text but CR and LF (which would end the header).
_VALUE = st.text(alphabet=st.characters(max_codepoint=255, exclude_characters="\r\n"), max_size=60)
_VALUE = st.one_of(_VALUE, _VALUE.map(lambda v: CANARY + v))
_HEADER = st.tuples(
    st.sampled_from(
        [
            "Idempotency-Key",
            "Authorization",
            "Content-Type",
            "Accept",
            "Accept-Encoding",
            "Cookie",
            "Origin",
            "Referer",
            "Range",
            "If-Modified-Since",
            "If-None-Match",
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "Forwarded",
            "X-CSRF-Token",
            "Sec-Fetch-Site",
            "Transfer-Encoding",
            "Expect",
        ]
    ),
    _VALUE,
)
_BODY = st.one_of(
    st.just(b""),
    st.binary(max_size=200),
    st.sampled_from([b"{}", b'{"to": "+12025550123", "body": "x"}', b"[]", b'{"messages": []}']),
)


@settings(
    max_examples=250,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "HEAD", "PUT", "OPTIONS", "PATCH"]),
    path=_PATH,
    query=_QUERY,
    headers=st.lists(_HEADER, max_size=4),
    authorized=st.booleans(),
    body=_BODY,
)
def test_fuzzed_requests_never_make_a_500(
    daemon: Daemon,
    method: str,
    path: str,
    query: str,
    headers: list[tuple[str, str]],
    authorized: bool,
    body: bytes,
) -> None:
    if authorized:
        headers = [("Authorization", f"Bearer {daemon.token}"), *headers]
    target = path + ("?" + query if query else "")
    raw = exchange(daemon.port, _request(method, target, headers, body))
    status, got, payload = split_response(raw)
    assert status < 500, raw[:400]
    if status >= 400:
        assert CANARY.encode() not in raw, raw[:400]
    if status >= 400 and method != "HEAD" and path.startswith("/api/"):
        assert got["content-type"].startswith("application/json"), raw[:400]
        assert "error" in json.loads(payload)
