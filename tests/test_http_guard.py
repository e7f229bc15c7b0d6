"""The HTTP server's hardening (issue 10, points 4-8), against real sockets.

Slow clients and connection caps, forwarded headers from trusted proxies only, the
Host check, parser errors answered in JSON without echo or leak, and no request that
makes a 500. In-process tests serve the app on a real loopback site exactly as
`smsgw run` does (`build_runner`); the rest run a real `smsgw run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from structlog.stdlib import ProcessorFormatter
from structlog.testing import capture_logs

from gateway import logs, tls
from gateway.admin.accounts import Accounts
from gateway.app import Gateway
from gateway.config import ConfigError, HttpConfig, from_mapping
from gateway.http_app import build_runner
from gateway.panel_users import Role
from gateway.store.panel_sql import AdminRepo
from gateway.tokens import create_token
from gateway.web.client import ProxyTrust
from gateway.web.connections import GuardedTCPSite
from gateway.web.guard import ServerNames, default_local_names
from gateway.web.headers import SECURITY_HEADERS
from tests.admin_support import PASSWORD
from tests.conftest import CANARY_DIGITS, CANARY_NUMBER, FAST_PASSWORD_HASH, GatewayFactory
from tests.http_daemon import exchange, read_to_close, running, split_response

Serve = Callable[..., Awaitable[tuple[int, Gateway]]]


@pytest.fixture
async def serve(open_gateway: GatewayFactory) -> AsyncIterator[Serve]:
    """Start the gateway's whole app on a loopback port with `http` settings."""
    runners: list[web.AppRunner] = []

    async def start(**http: Any) -> tuple[int, Gateway]:
        gw = await open_gateway(admin=FAST_PASSWORD_HASH, http={"shutdown_grace": 1.0, **http})
        runner = build_runner(gw)
        await runner.setup()
        runners.append(runner)
        paths = gw.config.tls_paths
        context = tls.server_context(*paths) if paths else None
        site = GuardedTCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        return site.port, gw

    yield start
    for runner in runners:
        await runner.cleanup()


def _assert_security_headers(headers: Any) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value, name


async def _closed(sock: socket.socket) -> bytes:
    """What the server sent before closing `sock` (waits on the close, not a clock)."""
    return await asyncio.to_thread(read_to_close, sock)


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), 20, (source, 0))


# -- 4: slow clients and connection caps -------------------------------------------------


async def test_idle_connection_is_closed_after_keepalive_timeout(serve: Serve) -> None:
    port, _gw = await serve(keepalive_timeout=0.3, header_timeout=30)
    with _connect(port) as s:
        assert await _closed(s) == b""


async def test_trickled_headers_are_cut_off_by_header_timeout(serve: Serve) -> None:
    # The idle timer alone (aiohttp's) would allow 30 s; the header timer 0.3 s.
    port, _gw = await serve(keepalive_timeout=30, header_timeout=0.3)
    with _connect(port) as s:
        s.sendall(b"GET /api/v1/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert await _closed(s) == b""


async def test_slow_body_is_cut_off_by_body_timeout(serve: Serve) -> None:
    port, gw = await serve(body_timeout=0.3)
    token = await create_token(gw.store, "t", frozenset({"send"}), gw.clock)
    with _connect(port) as s:
        s.sendall(
            b"POST /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer " + token.text.encode() + b"\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"to":'
        )
        assert await _closed(s) == b""


async def test_keep_alive_requests_are_not_cut_by_the_header_timer(serve: Serve) -> None:
    port, _gw = await serve(header_timeout=0.3, keepalive_timeout=30)
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            resp = await http.get(f"http://127.0.0.1:{port}/api/v1/healthz")
            assert resp.status in (200, 503)
            await resp.read()


async def test_connections_over_the_per_address_cap_get_503(serve: Serve) -> None:
    port, _gw = await serve(max_connections_per_address=4)
    held = [_connect(port, "127.0.0.2") for _ in range(4)]
    try:
        for s in held:
            s.sendall(b"GET / HTTP/1.1\r\n")  # and never finish
        with _connect(port, "127.0.0.2") as fifth:
            status, headers, body = split_response(await _closed(fifth))
        assert status == 503
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        _assert_security_headers(CIMultiDict(headers))
        # Another address is not affected.
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/api/v1/openapi.json") as resp,
        ):
            assert resp.status == 200
    finally:
        for s in held:
            s.close()


async def test_a_tls_handshake_that_never_comes_is_cut_off(serve: Serve, tmp_path: Path) -> None:
    """Before its handshake a TLS connection has not reached our protocol (asyncio
    allows 60 s); the header timeout bounds it too."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    tls.generate_self_signed(cert, key, ["127.0.0.1"])
    port, _ = await serve(tls_cert_file=str(cert), tls_key_file=str(key), header_timeout=0.3)
    with _connect(port) as s:
        assert await _closed(s) == b""
    trust = ssl.create_default_context(cafile=str(cert))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as http,
        http.get(f"https://127.0.0.1:{port}/api/v1/openapi.json") as resp,
    ):
        assert resp.status == 200
        assert "Strict-Transport-Security" in resp.headers


def test_slowloris_under_a_low_open_file_limit_leaves_service_to_others(
    tmp_path: Path,
) -> None:
    """1,100 trickling connections against 1,024 files made 75 of 80 requests fail."""
    attack = 300
    with running(
        tmp_path,
        http="header_timeout = 1.0\nkeepalive_timeout = 2.0\nmax_connections_per_address = 16\n",
        nofile=256,
    ) as d:
        slow = []
        for _ in range(attack):
            s = socket.socket()
            s.settimeout(30)
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", d.port))
            slow.append(s)
        for s in slow:
            with contextlib.suppress(OSError):  # already refused and closed
                s.sendall(b"GET /api/v1/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # 256 open files leave room for 128 connections, not the configured 4,096.
        assert '"cap": 128' in d.stderr() and "http_connection_cap_lowered" in d.stderr()
        d.wait_log(lambda e: e.get("event") == "http_connection_refused")
        for _ in range(20):
            raw = exchange(
                d.port,
                b"GET /api/v1/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )
            status, _, body = split_response(raw)
            assert status == 200, raw[:200]
            assert json.loads(body)["status"]
        # Every trickling connection is closed by the server: refused at the cap (a 503
        # the client may not get to read, as it sent its request into a closed socket),
        # or cut off by the header timer.
        for s in slow:
            with contextlib.suppress(ConnectionResetError):
                read_to_close(s)
            s.close()
        d.wait_log(lambda e: e.get("event") == "http_header_timeout")


def test_service_unit_raises_the_open_file_limit() -> None:
    unit = (Path(__file__).parent.parent / "systemd" / "smsgw.service").read_text()
    limits = [line for line in unit.splitlines() if line.startswith("LimitNOFILE=")]
    assert limits, "the unit must set LimitNOFILE (~@resources forbids raising it later)"
    assert int(limits[0].split("=")[1]) >= HttpConfig().max_connections + 128


# -- 5: plain HTTP on loopback only; forwarded headers from trusted proxies only --------


@pytest.mark.parametrize("listen", ["0.0.0.0:8080", "10.1.2.3:8080", "gw.hospital.local:80"])
def test_allow_plain_http_does_not_open_non_loopback(listen: str) -> None:
    problem = HttpConfig(listen=listen, allow_plain_http=True).plain_http_problem()
    assert problem is not None and problem.startswith("http.allow_plain_http:")
    assert HttpConfig(listen="127.0.0.1:8080", allow_plain_http=True).plain_http_problem() is None


def test_trusted_proxies_and_server_names_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"^http\.trusted_proxies\[1\]: expected an IP"):
        from_mapping({"http": {"trusted_proxies": ["10.0.0.0/8", "proxy.local"]}})
    with pytest.raises(ConfigError, match=r"^http\.server_names\[0\]: expected a host name"):
        from_mapping({"http": {"server_names": ["https://gw/"]}})


def _headers(**values: str) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict({k.replace("_", "-"): v for k, v in values.items()}))


def test_client_is_read_from_the_right_past_trusted_hops_only() -> None:
    trust = ProxyTrust(["127.0.0.1", "10.0.0.0/8"])
    h = _headers(X_Forwarded_For="6.6.6.6, 203.0.113.9, 10.1.1.1", X_Forwarded_Proto="https")
    client = trust.resolve("127.0.0.1", "http", h)
    assert (client.address, client.scheme) == ("203.0.113.9", "https")
    # The same headers from anyone else are ignored.
    stranger = trust.resolve("192.0.2.50", "http", h)
    assert (stranger.address, stranger.scheme) == ("192.0.2.50", "http")
    # Garbage from the proxy: keep the last address that was vouched for.
    assert trust.resolve("127.0.0.1", "http", _headers(X_Forwarded_For="nope")).address == (
        "127.0.0.1"
    )
    # RFC 7239, when that is what the proxy writes; X-Forwarded-* are then ignored.
    rfc = ProxyTrust(["127.0.0.1"], "forwarded")
    h = _headers(
        Forwarded='for=6.6.6.6, for="[2001:db8::7]:4711";proto=https', X_Forwarded_For="9.9.9.9"
    )
    client = rfc.resolve("127.0.0.1", "http", h)
    assert (client.address, client.scheme) == ("2001:db8::7", "https")


@pytest.mark.parametrize("trusted", [True, False])
async def test_forwarded_client_and_scheme_only_from_a_trusted_proxy(
    serve: Serve, trusted: bool, open_gateway: GatewayFactory
) -> None:
    port, _gw = await serve(
        trusted_proxies=["127.0.0.1"] if trusted else ["192.0.2.1"], access_log=True
    )
    forwarded = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9", "X-Forwarded-Proto": "https"}
    logged = asyncio.Event()  # the server logs the access after the response is sent

    def note_access(_logger: object, _name: str, event: Any) -> Any:
        if event.get("event") == "http":
            logged.set()
        return event

    async with aiohttp.ClientSession() as http:
        with capture_logs(processors=[note_access]) as events:
            page = await http.get(f"http://127.0.0.1:{port}/login", headers=forwarded)
            assert page.status == 200
            await page.read()
            await asyncio.wait_for(logged.wait(), 10)
    access = [e for e in events if e.get("event") == "http"]
    assert access and access[-1]["client"] == ("203.0.113.9" if trusted else "127.0.0.1")
    cookies = page.headers.getall("Set-Cookie")
    pre = [c for c in cookies if "smsgw_pre=" in c]
    assert pre
    if trusted:
        assert pre[0].startswith("__Host-smsgw_pre=") and "Secure" in pre[0]
        assert "Strict-Transport-Security" in page.headers
    else:
        assert pre[0].startswith("smsgw_pre=") and "Secure" not in pre[0]
        assert "Strict-Transport-Security" not in page.headers


async def _sign_in(http: aiohttp.ClientSession, port: int, username: str, client: str) -> int:
    """One failed-or-not sign-in by `client`, as the proxy on 127.0.0.1 reports it."""
    url = f"http://127.0.0.1:{port}/login"
    proxy = {"X-Forwarded-For": client}
    page = await http.get(url, headers=proxy)
    token = (await page.text()).split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    resp = await http.post(
        url,
        data={"username": username, "password": "wrong horse battery", "csrf": token},
        headers={
            **proxy,
            "Origin": f"http://127.0.0.1:{port}",
            "Cookie": f"smsgw_pre={page.cookies['smsgw_pre'].value}",
        },
        allow_redirects=False,
    )
    await resp.read()
    return resp.status


@pytest.mark.parametrize("trusted", [True, False])
async def test_sign_in_throttling_tells_clients_apart_only_behind_a_trusted_proxy(
    serve: Serve, trusted: bool
) -> None:
    """Behind the proxy every client was 127.0.0.1: one attacker throttled everyone."""
    port, gw = await serve(trusted_proxies=["127.0.0.1"] if trusted else ["192.0.2.1"])
    assert gw.config.admin.throttle_after >= 1
    async with aiohttp.ClientSession() as http:
        statuses = [
            await _sign_in(http, port, f"guess{i}", "203.0.113.66")
            for i in range(gw.config.admin.throttle_after + 2)
        ]
        assert statuses[-1] == 429, statuses  # the attacker's address is slowed down
        other = await _sign_in(http, port, "nurse", "203.0.113.7")
    assert other == (401 if trusted else 429)


async def test_sign_in_works_behind_a_trusted_tls_proxy(serve: Serve) -> None:
    """CSRF's origin check sees https://, as the browser's `Origin` does."""
    port, gw = await serve(trusted_proxies=["127.0.0.1"])
    origin = f"https://127.0.0.1:{port}"
    proxy = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    async with aiohttp.ClientSession() as http:
        accounts = Accounts(AdminRepo(gw.store), gw.audit, gw.clock, gw.config.admin)
        await accounts.create_user("ada", Role.ADMIN, PASSWORD, "console")
        page = await http.get(f"http://127.0.0.1:{port}/login", headers=proxy)
        text = await page.text()
        token = text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        nonce = page.cookies["__Host-smsgw_pre"].value
        resp = await http.post(
            f"http://127.0.0.1:{port}/login",
            data={"username": "ada", "password": PASSWORD, "csrf": token},
            headers={**proxy, "Origin": origin, "Cookie": f"__Host-smsgw_pre={nonce}"},
            allow_redirects=False,
        )
        assert resp.status == 303, await resp.text()
        assert any(c.startswith("__Host-smsgw_session=") for c in resp.headers.getall("Set-Cookie"))


# -- 6: the Host header ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/healthz", "/login", "/static/app.css", "/no/such/page"])
async def test_unknown_host_is_refused_for_api_and_panel(serve: Serve, path: str) -> None:
    port, _gw = await serve(server_names=["sms.hospital.example"])
    async with aiohttp.ClientSession() as http:
        for host in ("rebound.attacker.example", f"rebound.attacker.example:{port}", "127.0.0.2"):
            resp = await http.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
            assert resp.status == 421, host
            assert (await resp.json())["error"]["code"] == "unknown_host"
            assert "attacker" not in await resp.text()
            _assert_security_headers(resp.headers)
        for host in (
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            f"[::1]:{port}",
            "localhost",
            "sms.hospital.example",
            "SMS.hospital.example:443",
        ):
            resp = await http.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
            assert resp.status != 421, host
            await resp.read()
        # Loopback names on another port are someone else's server.
        resp = await http.get(
            f"http://127.0.0.1:{port}{path}", headers={"Host": f"localhost:{port + 1}"}
        )
        assert resp.status == 421


def test_a_wildcard_listen_answers_to_this_machine_and_the_address_dialled() -> None:
    names = ServerNames((), default_local_names("0.0.0.0:8443"))
    me = socket.gethostname()
    assert names.allows(f"{me}:8443", "10.1.2.3", 8443)
    assert names.allows("10.1.2.3:8443", "10.1.2.3", 8443)
    assert names.allows("[2001:db8::5]:8443", "[2001:db8::5]", 8443)
    assert not names.allows("10.1.2.4:8443", "10.1.2.3", 8443)
    assert not names.allows("rebound.attacker.example:8443", "10.1.2.3", 8443)
    assert not names.allows(f"{me}:9999", "10.1.2.3", 8443)


async def test_missing_host_is_refused(serve: Serve) -> None:
    port, _gw = await serve()
    with _connect(port) as s:
        s.sendall(b"GET /api/v1/healthz HTTP/1.0\r\n\r\n")
        status, _, body = split_response(await _closed(s))
    assert status == 400
    assert json.loads(body)["error"]["code"] == "missing_host"


# -- 7: library loggers (and 7, 8 against a real `smsgw run`: test_http_daemon.py) ------


def test_library_loggers_go_through_the_redacting_pipeline() -> None:
    out = io.StringIO()
    logs.configure("json", "info", stream=out)
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h.formatter, ProcessorFormatter)]
    try:
        try:
            raise ValueError(f"Got more than 8190 bytes: b'CANARY {CANARY_NUMBER}'")
        except ValueError:
            logging.getLogger("aiohttp.server").exception("Error handling request from %s", "::1")
        logging.getLogger("asyncio").error(
            "Task exception was never retrieved\nfuture: <Task exception=ValueError('CANARY')>"
        )
        logging.getLogger("aiohttp.access").warning("GET /api/v1/messages?to=%s", CANARY_NUMBER)
    finally:
        structlog.reset_defaults()
        for handler in ours:
            root.removeHandler(handler)
    text = out.getvalue()
    assert "CANARY" not in text and CANARY_DIGITS not in text
    events = [json.loads(line) for line in text.splitlines()]
    assert [e["logger"] for e in events] == ["aiohttp.server", "asyncio", "aiohttp.access"]
    assert events[0]["level"] == "error" and events[0]["event"] == "Error handling request from ::1"
    assert "ValueError (message withheld)" in events[0]["exception"]
    assert "test_http_guard.py" in events[0]["exception"]


async def test_an_ordinary_send_passes_the_guards(serve: Serve) -> None:
    """The guards do not get in the way of an ordinary authenticated request."""
    port, gw = await serve()
    token = await create_token(gw.store, "t", frozenset({"send", "read"}), gw.clock)
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"http://127.0.0.1:{port}/api/v1/messages",
            json={"to": "+12025550123", "body": "hello"},
            headers={"Authorization": f"Bearer {token.text}"},
        )
        assert resp.status == 202, await resp.text()
