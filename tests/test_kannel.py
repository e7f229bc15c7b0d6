"""The Kannel sendsms listener, side by side with Debian's real Kannel: the same
requests get the same status and body; then what smsgw does with an accepted one
(mapped fields, the token it is made as) and what it refuses that Kannel would take."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from gateway.app import Gateway
from gateway.config import ConfigError, from_mapping
from gateway.integrations import kannel_server
from gateway.tokens import create_token
from tests.conftest import CANARY_DIGITS, CANARY_NUMBER, GatewayFactory, record_decision
from tests.peers import kannel_peer
from tests.peers.kannel_peer import PASSWORD, USERNAME, KannelPeer

CALLBACK_ORIGIN = "http://127.0.0.1:9"  # allowed in config; never called in these tests
TO = "+12025550123"


@dataclass
class Smsgw:
    gw: Gateway
    url: str


async def open_listener(
    open_gateway: GatewayFactory,
    tmp_path: Path,
    scopes: frozenset[str] = frozenset({"send"}),
    origins: list[str] | None = None,
    **user: Any,
) -> tuple[Gateway, TestServer]:
    users = [
        {"username": USERNAME, "password_file": "kannel.pw", "token_file": "kannel.token", **user}
    ]
    gw = await open_gateway(
        kannel={"enabled": True, "users": users, "dlr_url_origins": origins or [CALLBACK_ORIGIN]}
    )
    token = await create_token(gw.store, "kannel", scopes, gw.clock)
    (tmp_path / "kannel.pw").write_text(PASSWORD + "\n")
    (tmp_path / "kannel.token").write_text(token.text + "\n")
    server = TestServer(kannel_server.build_app(gw), host="127.0.0.1", port=0)
    await server.start_server()
    return gw, server


@pytest.fixture
async def smsgw(open_gateway: GatewayFactory, tmp_path: Path) -> AsyncIterator[Smsgw]:
    gw, server = await open_listener(open_gateway, tmp_path)
    yield Smsgw(gw, f"http://127.0.0.1:{server.port}")
    await server.close()


@pytest.fixture
async def kannel(tmp_path: Path) -> AsyncIterator[KannelPeer]:
    found = kannel_peer.ensure_installed()
    if found is None:
        pytest.skip("Debian's kannel (bearerbox, smsbox) is not installed and cannot be")
    work = tmp_path / "kannel"
    work.mkdir()
    peer = await KannelPeer.start(work, *found)
    yield peer
    await peer.stop()


def q(**params: str) -> str:
    base = {"username": USERNAME, "password": PASSWORD}
    return urllib.parse.urlencode({**base, **{k.replace("_", "-"): v for k, v in params.items()}})


# (what, method, query, headers, body): one request each, sent to both.
Case = tuple[str, str, str, dict[str, str], bytes | None]
POST_AUTH = {"X-Kannel-Username": USERNAME, "X-Kannel-Password": PASSWORD}


def get(what: str, query: str) -> Case:
    return (what, "GET", query, {}, None)


def post(what: str, kind: str = "text/plain", body: bytes = b"hi", **headers: str) -> Case:
    named = {"X-Kannel-" + k.replace("_", "-").title(): v for k, v in headers.items()}
    return (what, "POST", "", {**POST_AUTH, "Content-Type": kind, **named}, body)


CASES: list[Case] = [
    get("accepted", q(to=TO, text="hello")),
    get("user/pass aliases", f"user={USERNAME}&pass={PASSWORD}&to=%2B12025550123&text=hi"),
    get("bad password", q(to=TO, text="hi", password="wrong")),
    get("unknown user", q(to=TO, text="hi", username="nobody")),
    get("no credentials", "to=%2B12025550123&text=hi"),
    get("missing to", q(text="hi")),
    get("empty to", q(to="", text="hi")),
    get("letters in to", q(to="12a", text="hi")),
    get("two receivers", q(to="+12025550123 +12025550124", text="hi")),
    get("deprecated dlrmask out of range", q(to=TO, text="hi", dlrmask="67")),
    get("dlr-mask just out of range", q(to=TO, text="hi", dlr_mask="67")),
    get("pid out of range", q(to=TO, text="hi", pid="256")),
    get("rpi out of range", q(to=TO, text="hi", rpi="3")),
    get("alt-dcs out of range", q(to=TO, text="hi", alt_dcs="2")),
    get("priority -1 is unset", q(to=TO, text="hi", priority="-1")),
    get("priority -2", q(to=TO, text="hi", priority="-2")),
    get("dlr-url too short", q(to=TO, text="hi", dlr_url="https")),
    get("deprecated dlrurl not http", q(to=TO, text="hi", dlrurl="ftp://x")),
    get("unknown parameter", q(to=TO, text="hi", colour="blue")),
    get("udh too long", q(to=TO, text="hi", udh="\x8f" + "\x00" * 143)),
    get("bad coding", q(to=TO, text="hi", coding="5")),
    get("coding not a number", q(to=TO, text="hi", coding="abc")),
    get("ucs-2 from utf-8", q(to=TO, text="é", coding="2", charset="UTF-8")),
    get("unknown charset", q(to=TO, text="hi", charset="no-such-charset")),
    get("priority out of range", q(to=TO, text="hi", priority="9")),
    get("mclass out of range", q(to=TO, text="hi", mclass="9")),
    get("mwi out of range", q(to=TO, text="hi", mwi="9")),
    get("compress out of range", q(to=TO, text="hi", compress="3")),
    get("dlr-mask out of range", q(to=TO, text="hi", dlr_mask="99")),
    get("negative validity", q(to=TO, text="hi", validity="-5")),
    get("negative deferred", q(to=TO, text="hi", deferred="-3")),
    get("deferred", q(to=TO, text="hi", deferred="5")),
    get("account misformed", q(to=TO, text="hi", account="a[b")),
    get("dlr-url not http", q(to=TO, text="hi", dlr_url="ftp://x")),
    get("udh misformed", q(to=TO, text="hi", udh="\x05\x00\x00")),
    post("post text/plain", to=TO),
    post("post text/plain in utf-8", "text/plain; charset=UTF-8", "é".encode(), to=TO),
    post("post no to"),
    post("post bad password", password="x", to=TO),
    post("post html", "text/html", b"<b>hi</b>", to=TO),
    post("post odd type", "image/png", to=TO),
    post("post bad coding", coding="7", to=TO),
    post("post bad priority", priority="4", to=TO),
    post("post udh misformed", udh="0500030102", to=TO),
    post("post dlr-url misformed", dlr_url="ftp://x", to=TO),
    (
        "post form",
        "POST",
        "",
        {"Content-Type": "application/x-www-form-urlencoded"},
        q(to=TO, text="hi").encode(),
    ),
]


async def ask(
    session: aiohttp.ClientSession, base: str, case: Case, path: str = kannel_server.SENDSMS
) -> tuple[int, str, str]:
    _, method, query, headers, body = case
    url = f"{base}{path}" + (f"?{query}" if query else "")
    async with session.request(method, url, headers=headers, data=body) as r:
        return r.status, await r.text(), r.headers.get("Content-Type", "")


async def test_same_answers_as_debians_kannel(kannel: KannelPeer, smsgw: Smsgw) -> None:
    differences = []
    async with aiohttp.ClientSession() as session:
        for case in CASES:
            theirs = await ask(session, kannel.url, case)
            ours = await ask(session, smsgw.url, case)
            if theirs != ours:
                differences.append((case[0], theirs, ours))
        for path in ("/cgi-bin/nothing", "/"):  # any other path
            case = ("unknown path", "GET", "", {}, None)
            theirs, ours = (
                await ask(session, kannel.url, case, path),
                await ask(session, smsgw.url, case, path),
            )
            if theirs != ours:
                differences.append((path, theirs, ours))
    assert differences == []
    assert ours[:2] == (404, "Unknown request.")


async def test_accepted_answer_and_kannel_reply_headers(smsgw: Smsgw) -> None:
    async with aiohttp.ClientSession() as session:
        status, body, kind = await ask(session, smsgw.url, CASES[0])
        async with session.put(f"{smsgw.url}{kannel_server.SENDSMS}?{q(to=TO)}") as r:
            assert r.status == 400 and await r.read() == b""  # Kannel: no body, no send
    assert (status, body, kind) == (202, "0: Accepted for delivery", "text/html")
    rows = await messages(smsgw.gw)
    assert len(rows) == 1


async def messages(gw: Gateway) -> list[Any]:
    cur = await gw.store.reader.execute(
        "SELECT id, token_id, priority, send_at, expires_at, created_at, route_hint,"
        " category, encoding FROM messages ORDER BY id"
    )
    return list(await cur.fetchall())


async def send(gw_url: str, **params: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{gw_url}{kannel_server.SENDSMS}?{q(**params)}") as r,
    ):
        return r.status, await r.text()


async def test_fields_map_onto_the_message_made_as_the_users_token(smsgw: Smsgw) -> None:
    gw = smsgw.gw
    status, _ = await send(
        smsgw.url,
        to=TO,
        text="hello",
        smsc="main",
        priority="3",
        validity="90",
        deferred="10",
        account="ward-7b",
    )
    assert status == 202
    (row,) = await messages(gw)
    tokens = await gw.store.api_tokens.all()
    assert row["token_id"] == tokens[0].id  # the configured user's token, not anonymous
    assert row["priority"] == 0  # Kannel priority 3 (highest) is smsgw's critical
    assert row["route_hint"] == "main" and row["category"] == "ward-7b"
    now = row["created_at"]
    assert row["send_at"] == pytest.approx(now + 600, abs=1)
    assert row["expires_at"] == pytest.approx(now + 5400, abs=1)


async def test_ucs2_text_in_kannels_default_charset(smsgw: Smsgw) -> None:
    text = "✓ taken"  # coding=2 with no charset: UTF-16BE bytes, as Kannel reads them
    raw = urllib.parse.quote_from_bytes(text.encode("utf-16-be"))
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{smsgw.url}/cgi-bin/sendsms?{q(to=TO)}&coding=2&text={raw}") as r,
    ):
        assert r.status == 202
    (row,) = await messages(smsgw.gw)
    assert row["encoding"] == "ucs2"


@pytest.mark.parametrize(
    ("params", "answer"),
    [
        ({"udh": "\x02\x00\x00"}, "UDH field not supported by this gateway, rejected"),
        ({"mclass": "0"}, "MClass field not supported by this gateway, rejected"),
        ({"mwi": "1"}, "MWI field not supported by this gateway, rejected"),
        ({"pid": "0"}, "PID field not supported by this gateway, rejected"),
        ({"compress": "1"}, "Compress field not supported by this gateway, rejected"),
        ({"coding": "1"}, "Coding 1 (8-bit binary) not supported by this gateway, rejected"),
        ({"binfo": "x"}, "BInfo field not supported by this gateway, rejected"),
        ({"meta-data": "?smpp?a=b"}, "Meta-Data field not supported by this gateway, rejected"),
        ({"from": "12025550000"}, "Sender not allowed for this user, rejected"),
        ({"dlr-mask": "1"}, "DLR-URL and DLR-Mask go together, rejected"),
        ({"dlr-url": CALLBACK_ORIGIN + "/x"}, "DLR-URL and DLR-Mask go together, rejected"),
        ({"dlr-mask": "32", "dlr-url": CALLBACK_ORIGIN + "/x"}, None),
        ({"dlr-mask": "64", "dlr-url": CALLBACK_ORIGIN + "/x"}, None),
        ({"dlr-mask": "1", "dlr-url": "http://evil.example/x"}, None),
        ({"text": ""}, "Text missing, rejected"),
        ({"smsc": "nowhere"}, "Not routable. Do not try again."),
        ({"validity": "0"}, "Validity field refused (invalid_field), rejected"),
    ],
)
async def test_what_kannel_takes_and_smsgw_does_not_do_is_refused(
    smsgw: Smsgw, params: dict[str, str], answer: str | None
) -> None:
    """Each of these Kannel would accept; smsgw refuses rather than ignore it."""
    query = q(**{"to": TO, "text": "hi", **params})
    with capture_logs() as logs:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{smsgw.url}/cgi-bin/sendsms?{query}") as r,
        ):
            status, body = r.status, await r.text()
    assert status in (400, 403)
    if answer is not None:
        assert body == answer
    assert "rejected" in body or "Not routable" in body
    assert await messages(smsgw.gw) == []
    assert "2025550123" not in repr(logs)


async def test_allowed_dlr_url_is_accepted(smsgw: Smsgw) -> None:
    status, body = await send(
        smsgw.url, to=TO, text="hi", dlr_mask="3", dlr_url=CALLBACK_ORIGIN + "/dlr?s=%d"
    )
    assert (status, body) == (202, "0: Accepted for delivery")


async def test_token_without_send_scope_or_revoked_fails_authorisation(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw, server = await open_listener(open_gateway, tmp_path, frozenset({"read"}))
    try:
        status, body = await send(f"http://127.0.0.1:{server.port}", to=TO, text="hi")
        assert (status, body) == (403, "Authorization failed for sendsms")
        assert await messages(gw) == []
    finally:
        await server.close()


async def test_revoked_token_fails_authorisation(smsgw: Smsgw) -> None:
    gw = smsgw.gw
    (token,) = await gw.store.api_tokens.all()
    await gw.store.api_tokens.revoke(token.id, gw.clock.time())
    gw.tokens.forget()
    status, body = await send(smsgw.url, to=TO, text="hi")
    assert (status, body) == (403, "Authorization failed for sendsms")


async def test_a_user_may_name_its_configured_sender(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    _, server = await open_listener(open_gateway, tmp_path, sender="HOSPITAL")
    url = f"http://127.0.0.1:{server.port}"
    try:
        assert (await send(url, to=TO, text="hi", **{"from": "HOSPITAL"}))[0] == 202
        assert (await send(url, to=TO, text="hi", **{"from": "OTHER"}))[0] == 400
    finally:
        await server.close()


async def test_form_post_is_refused_as_kannel_refuses_it(smsgw: Smsgw) -> None:
    """Kannel 1.4.5 answers a form POST 400 "Invalid content-type" (side by side in
    CASES); a client written for Kannel never relies on it, so smsgw sends nothing."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{smsgw.url}/cgi-bin/sendsms",
            data={"username": USERNAME, "password": PASSWORD, "to": TO, "text": "hi"},
        ) as r,
    ):
        assert (r.status, await r.text()) == (400, "Invalid content-type")
    assert await messages(smsgw.gw) == []


async def test_no_number_or_text_reaches_the_log(smsgw: Smsgw) -> None:
    with capture_logs() as logs:
        await send(smsgw.url, to=CANARY_NUMBER, text="CANARY body")
        await send(smsgw.url, to=CANARY_NUMBER, text="CANARY body", coding="9")
    assert CANARY_DIGITS not in repr(logs) and "CANARY" not in repr(logs)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"enabled": True}, "kannel.users: at least one user is needed"),
        ({"listen": "13013"}, "kannel.listen:"),
        ({"dlr_url_origins": ["https://ehr.example.org/path"]}, "kannel.dlr_url_origins[0]:"),
        ({"dlr_url_origins": ["HTTPS://EHR.example.org"]}, "kannel.dlr_url_origins[0]:"),
        ({"users": [{"username": "a", "password_file": "p"}]}, "kannel.users[0].token_file"),
        (
            {"users": [{"username": "a", "password_file": "p", "token_file": "t", "token": "n"}]},
            "kannel.users[0].token_file: give token_file or token",
        ),
        ({"users": [{"username": "a", "token": "n"}]}, "kannel.users[0]"),
        ({"colour": "blue"}, "kannel.colour"),
        (
            {"users": [{"username": "a", "password_file": "p", "token_file": "t"}] * 2},
            "kannel.users[1].username: duplicate",
        ),
    ],
)
def test_config_errors_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        from_mapping({"kannel": section})
    assert message in str(e.value)


def test_config_defaults_to_off_on_kannels_port() -> None:
    c = from_mapping({}).kannel
    assert (c.enabled, c.listen, c.users, c.dlr_url_origins) == (False, "127.0.0.1:13013", (), ())


async def test_queued_for_later_while_no_route_can_send(smsgw: Smsgw) -> None:
    """Kannel answers "3: Queued for later delivery" while its SMSC is down; so does
    smsgw while every route is paused or down (the message is stored all the same)."""
    smsgw.gw.routes["main"].set_paused(True)
    assert await send(smsgw.url, to=TO, text="hi") == (202, "3: Queued for later delivery")
    assert len(await messages(smsgw.gw)) == 1
    smsgw.gw.routes["main"].set_paused(False)
    assert await send(smsgw.url, to=TO, text="hi") == (202, "0: Accepted for delivery")


async def test_a_message_the_consent_policy_refuses_is_refused_as_kannel_would(
    smsgw: Smsgw,
) -> None:
    """Kannel knows no consent: a message stored `blocked` is refused with a 4xx a Kannel
    client does not retry, naming smsgw's reason; the row is kept, blocked."""
    await record_decision(smsgw.gw, TO, "opt_out", "all")
    assert await send(smsgw.url, to=TO, text="hi") == (
        403,
        "Refused by consent policy (opted_out), rejected",
    )
    cur = await smsgw.gw.store.reader.execute("SELECT state, error_code FROM messages")
    assert [tuple(r) for r in await cur.fetchall()] == [("blocked", "opted_out")]


async def test_post_udh_header_is_read_as_hex_and_refused(smsgw: Smsgw) -> None:
    async with aiohttp.ClientSession() as session:
        for udh, answer in (
            ("0500030102", "UDH field misformed, rejected"),  # length octet 5, 5 octets
            ("050003010201", "UDH field not supported by this gateway, rejected"),
        ):
            case = post("udh", udh=udh, to=TO)
            assert (await ask(session, smsgw.url, case))[:2] == (400, answer)


async def test_a_user_may_name_its_token(open_gateway: GatewayFactory, tmp_path: Path) -> None:
    users = [{"username": USERNAME, "password_file": "kannel.pw", "token": "ehr-kannel"}]
    gw = await open_gateway(kannel={"enabled": True, "users": users})
    (tmp_path / "kannel.pw").write_text(PASSWORD)
    server = TestServer(kannel_server.build_app(gw), host="127.0.0.1", port=0)
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}"
    refused = (403, "Authorization failed for sendsms")
    try:
        assert await send(url, to=TO, text="hi") == refused  # no such token yet
        first = await create_token(gw.store, "ehr-kannel", frozenset({"send"}), gw.clock)
        assert await send(url, to=TO, text="hi") == (202, "0: Accepted for delivery")
        (row,) = await messages(gw)
        assert row["token_id"] == first.id
        await create_token(gw.store, "ehr-kannel", frozenset({"send"}), gw.clock)
        assert await send(url, to=TO, text="hi") == refused  # ambiguous: which one?
        await gw.store.api_tokens.revoke(first.id, gw.clock.time())
        assert (await send(url, to=TO, text="hi"))[0] == 202
    finally:
        await server.close()


async def test_password_guesses_are_throttled_like_panel_sign_ins(
    open_gateway: GatewayFactory, tmp_path: Path
) -> None:
    """Hundreds of parallel wrong passwords: only the first few are counted (each try
    is counted before its answer), the rest refused unchecked; while the delay holds
    even the right password is refused (no oracle), and afterwards it works."""
    gw, server = await open_listener(open_gateway, tmp_path)
    url = f"http://127.0.0.1:{server.port}"
    admin = gw.config.admin
    try:
        wrong = await asyncio.gather(
            *(
                send(url, username=USERNAME, password=f"guess{i}", to=TO, text="hi")
                for i in range(200)
            )
        )
        assert {status for status, _ in wrong} == {403}
        counts = await gw.store.reader.all(
            "SELECT key, failures FROM login_failures WHERE key LIKE 'kannel%'"
        )
        assert counts and max(f for _, f in counts) == admin.throttle_after + 1
        right = await send(url, username=USERNAME, password=PASSWORD, to=TO, text="hi")
        assert right[0] == 403, "refused while the delay holds"
        gw.clock.advance(admin.max_delay)  # type: ignore[attr-defined]  # the fake clock
        right = await send(url, username=USERNAME, password=PASSWORD, to=TO, text="hi")
        assert right == (202, "0: Accepted for delivery")
        repeats = await gw.store.reader.all(
            "SELECT count(*) FROM audit_log WHERE action = 'service_login_failed'"
        )
        assert repeats[0][0] == 1, "failures are audited once per window, with a count"
    finally:
        await server.close()
