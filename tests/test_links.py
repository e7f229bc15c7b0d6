"""Tracked links end to end over loopback: created through the API (audited, refused
destinations named by code), a send's `{link:NAME}` stored as the message's own short
URL with the segments of the expanded body, and that URL followed through the real
redirect listener: people counted apart from HEADs, prefetches, previews and scanners,
each click in `link_clicks` with the message id; expiry, fallback, the rate limit."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from structlog.testing import capture_logs

from gateway.app import Gateway
from gateway.links import server as links_server
from gateway.links import tokens
from gateway.templates.usecase import DraftRequest
from gateway.tokens import create_token
from gateway.usecases import Caller
from tests.conftest import CANARY_NUMBER, GatewayFactory
from tests.test_api import Api, _api, _error
from tests.test_notice_runner import CONSENT, _messages, _setup

SHORT_HOST = "https://go.example-hospital.org"
LINKS = {
    "enabled": True,
    "base_url": SHORT_HOST,
    "allow": ["www.example-hospital.org", "https://portal.example.org/flu/"],
    "requests_per_minute": 60,
    "request_burst": 20,
}
FLU = "https://www.example-hospital.org/flu-clinic?site=north"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
URL = re.compile(re.escape(SHORT_HOST) + r"/([A-Za-z0-9]+)")


@dataclass
class Rig:
    api: Api
    redirect: str  # the redirect listener's base URL
    http: ClientSession

    @property
    def gw(self) -> Gateway:
        return self.api.gw

    async def follow(self, token: str, method: str = "GET", **headers: str) -> Any:
        return await self.http.request(
            method, f"{self.redirect}/{token}", headers=headers, allow_redirects=False
        )

    async def clicks(self) -> list[tuple[Any, ...]]:
        rows = await self.gw.store.reader.all(
            "SELECT link_id, message_id, human, agent_class FROM link_clicks ORDER BY seq"
        )
        return [tuple(r) for r in rows]


async def _rig(gw: Gateway) -> AsyncIterator[Rig]:
    server = TestServer(links_server.build_app(gw), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with ClientSession() as http:
            async for api in _api(gw, frozenset({"admin"})):
                yield Rig(api, f"http://127.0.0.1:{server.port}", http)
    finally:
        await server.close()


@pytest.fixture
async def rig(open_gateway: GatewayFactory) -> AsyncIterator[Rig]:
    async for r in _rig(await open_gateway(links=LINKS)):
        yield r


async def _create(rig: Rig, name: str = "flu-clinic", dest: str = FLU, **more: Any) -> Any:
    r = await rig.api.post("/api/v1/links", {"name": name, "destination": dest, **more})
    assert r.status == 201, await r.text()
    return await r.json()


async def _send(rig: Rig, body: str) -> tuple[str, str]:
    """Send through the API; (message id, the body as stored)."""
    r = await rig.api.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": body})
    assert r.status == 202, await r.text()
    answer = await r.json()
    stored = await rig.gw.store.records.message(answer["id"])
    assert stored is not None
    return answer["id"], stored.body.open()


def _requests(gw: Gateway, kind: str) -> float:
    """`smsgw_link_requests_total{kind}` as a scrape reads it."""
    found = gw.metrics.registry.get_sample_value("smsgw_link_requests_total", {"kind": kind})
    return found or 0.0


# -- the API ---------------------------------------------------------------------------


async def test_create_list_and_read_a_link_audited(rig: Rig) -> None:
    made = await _create(rig, expires_at="2030-01-01T00:00:00Z")
    assert made["name"] == "flu-clinic" and made["placeholder"] == "{link:flu-clinic}"
    assert made["destination"] == FLU and made["expires_at"] == "2030-01-01T00:00:00.000Z"
    assert made["clicks"] == {"human": 0, "bots": 0, "people": 0}
    listed = await (await rig.api.get("/api/v1/links")).json()
    assert [x["id"] for x in listed["links"]] == [made["id"]]
    one = await (await rig.api.get(f"/api/v1/links/{made['id']}")).json()
    assert one["by_class"]["human"] == 0 and one["by_class"]["head"] == 0
    entries = await rig.gw.audit.entries(limit=20)
    assert [(e.action, e.target_id) for e in entries if e.action == "link_created"] == [
        ("link_created", made["id"])
    ]
    await _error(await rig.api.get("/api/v1/links/lnk_0000000000000000"), 404, "not_found")


@pytest.mark.parametrize(
    "dest",
    [
        "https://evil.example.net/flu",
        "https://www.example-hospital.org@evil.example.net/",
        "//evil.example.net/",
        "http://www.example-hospital.org/flu",
        "https://portal.example.org/flu/../admin",
    ],
)
async def test_a_disallowed_destination_is_refused_without_echo(rig: Rig, dest: str) -> None:
    r = await rig.api.post("/api/v1/links", {"name": "x", "destination": dest})
    error = await _error(r, 422, "link_not_allowed")
    assert error["field"] == "destination" and "evil" not in str(error)
    assert (await (await rig.api.get("/api/v1/links")).json())["links"] == []


async def test_names_scopes_and_links_off(rig: Rig, open_gateway: GatewayFactory) -> None:
    await _error(
        await rig.api.post("/api/v1/links", {"name": "Flu Clinic", "destination": FLU}),
        422,
        "invalid_field",
    )
    token = await create_token(rig.gw.store, "reader", frozenset({"read"}), rig.gw.clock)
    r = await rig.api.post("/api/v1/links", {"name": "a", "destination": FLU}, token=token.text)
    await _error(r, 403, "forbidden")
    assert (await rig.api.get("/api/v1/links", token=token.text)).status == 200


async def test_parallel_creates_of_one_name_make_one_link(rig: Rig) -> None:
    answers = await asyncio.gather(
        *(
            rig.api.post("/api/v1/links", {"name": "flu", "destination": f"{FLU}&n={i}"})
            for i in range(8)
        )
    )
    statuses = sorted(a.status for a in answers)
    assert statuses == [201] + [409] * 7
    for a in answers:
        if a.status == 409:
            await _error(a, 409, "name_taken")
    rows = await rig.gw.store.reader.all("SELECT count(*) FROM links")
    assert rows[0][0] == 1


async def test_creating_while_links_are_off_is_refused(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    async for api in _api(gw, frozenset({"admin"})):
        r = await api.post("/api/v1/links", {"name": "flu", "destination": FLU})
        await _error(r, 409, "links_off")
        r = await api.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": "{link:flu}"})
        await _error(r, 422, "links_off")


# -- the accept path -------------------------------------------------------------------


async def test_a_send_stores_its_own_short_url_and_counts_the_expanded_segments(
    rig: Rig,
) -> None:
    made = await _create(rig)
    body = "Flu shots this week at North clinic, no appointment needed: {link:flu-clinic}"
    first, stored = await _send(rig, body)
    found = URL.search(stored)
    assert found is not None and tokens.TOKEN.match(found.group(1))
    assert len(found.group(1)) == 16
    assert stored == body.replace("{link:flu-clinic}", found.group(0))
    assert "{link:" not in stored and FLU not in stored
    assert (await (await rig.api.get(f"/api/v1/messages/{first}")).json())["segments"] == 1
    # 138 characters as written (one part), 169 as sent: the answer counts two parts.
    body = "x" * 120 + " {link:flu-clinic}"
    r = await rig.api.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": body})
    answer = await r.json()
    assert len(body) <= 160 and answer["segments"] == 2 and answer["encoding"] == "gsm7"
    stored_second = await rig.gw.store.records.message(answer["id"])
    assert stored_second is not None and stored_second.segments == 2
    assert len(stored_second.body.open()) == 169
    rows = await rig.gw.store.reader.all(
        "SELECT link_id, message_id FROM link_tokens ORDER BY created_at, message_id"
    )
    assert sorted(tuple(r) for r in rows) == sorted(
        [(made["id"], first), (made["id"], answer["id"])]
    )
    second = URL.search(stored_second.body.open())
    assert second is not None and second.group(1) != found.group(1)


async def test_a_batch_refuses_only_the_item_with_an_unknown_link(rig: Rig) -> None:
    await _create(rig)
    r = await rig.api.post(
        "/api/v1/messages/batch",
        {
            "messages": [
                {"to": CANARY_NUMBER, "body": "ok {link:flu-clinic}"},
                {"to": CANARY_NUMBER, "body": "CANARY {link:no-such}"},
            ]
        },
    )
    assert r.status == 202, await r.text()
    results = (await r.json())["results"]
    assert results[0]["status"] == "queued"
    assert results[1]["error"]["code"] == "unknown_link"
    assert results[1]["error"]["field"] == "messages[1].body"
    assert "CANARY" not in results[1]["error"]["message"]
    assert "no-such" not in results[1]["error"]["message"]


async def test_an_expired_link_is_refused_at_accept(rig: Rig) -> None:
    await _create(rig, expires_at="2030-01-01T00:00:00Z")
    rig.gw.clock.advance(2_000_000_000 - rig.gw.clock.time())  # type: ignore[attr-defined]
    r = await rig.api.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": "{link:flu-clinic}"})
    await _error(r, 422, "link_expired")


# -- the redirect listener -------------------------------------------------------------


async def test_a_click_redirects_to_the_stored_destination_and_is_counted(rig: Rig) -> None:
    made = await _create(rig)
    message_id, stored = await _send(rig, "Flu shots: {link:flu-clinic}")
    token = URL.search(stored).group(1)  # type: ignore[union-attr]
    with capture_logs() as logs:
        r = await rig.follow(token, **{"User-Agent": IPHONE})
    assert r.status == 302
    assert r.headers["Location"] == FLU
    assert r.headers["Cache-Control"] == "no-store"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert await r.read() == b""
    assert token not in repr(logs)
    r = await rig.follow(token, "HEAD", **{"User-Agent": IPHONE})
    assert r.status == 302 and r.headers["Location"] == FLU
    r = await rig.follow(token, **{"User-Agent": IPHONE, "Sec-Purpose": "prefetch"})
    assert r.status == 302
    r = await rig.follow(token, **{"User-Agent": "facebookexternalhit/1.1 Facebot Twitterbot/1.0"})
    assert r.status == 302
    r = await rig.follow(token, **{"User-Agent": "Mimecast Link Scanner"})
    assert r.status == 302
    assert await rig.clicks() == [
        (made["id"], message_id, 1, "human"),
        (made["id"], message_id, 0, "head"),
        (made["id"], message_id, 0, "prefetch"),
        (made["id"], message_id, 0, "preview"),
        (made["id"], message_id, 0, "scanner"),
    ]
    one = await (await rig.api.get(f"/api/v1/links/{made['id']}")).json()
    assert one["clicks"] == {"human": 1, "bots": 4, "people": 1}
    assert one["by_class"]["head"] == 1 and one["by_class"]["preview"] == 1
    listed = await (await rig.api.get("/api/v1/links")).json()
    assert listed["links"][0]["clicks"] == {"human": 1, "bots": 4, "people": 1}
    assert [_requests(rig.gw, k) for k in ("human", "head", "gone")] == [1.0, 1.0, 0.0]


async def test_no_open_redirect_and_unknown_or_expired_tokens_look_alike(rig: Rig) -> None:
    await _create(rig, expires_at="2030-01-01T00:00:00Z")
    _, stored = await _send(rig, "{link:flu-clinic}")
    token = URL.search(stored).group(1)  # type: ignore[union-attr]
    r = await rig.http.get(
        f"{rig.redirect}/{token}?next=https://evil.example.net/", allow_redirects=False
    )
    assert r.headers["Location"] == FLU  # only ever the stored destination
    unknown = await rig.follow("A" * 16)
    gone_page = await unknown.text()
    assert unknown.status == 410 and "expired" in gone_page
    rig.gw.clock.advance(2_000_000_000 - rig.gw.clock.time())  # type: ignore[attr-defined]
    expired = await rig.follow(token)
    assert expired.status == 410 and await expired.text() == gone_page
    assert "Location" not in expired.headers
    for path in ("/", "/favicon.ico", "/api/v1/links", "/A" + "b" * 70):
        r = await rig.http.get(rig.redirect + path, allow_redirects=False)
        assert r.status in (404, 410) and "Location" not in r.headers
    assert len(await rig.clicks()) == 1  # the ?next= click only


async def test_unknown_tokens_go_to_the_fallback_page(open_gateway: GatewayFactory) -> None:
    fallback = "https://www.example-hospital.org/expired"
    gw = await open_gateway(links={**LINKS, "fallback_url": fallback})
    async for rig in _rig(gw):
        r = await rig.follow("B" * 16)
        assert r.status == 302 and r.headers["Location"] == fallback
        assert await rig.clicks() == []


async def test_a_source_hammering_a_link_is_limited_and_not_counted(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(links={**LINKS, "requests_per_minute": 1, "request_burst": 3})
    async for rig in _rig(gw):
        await _create(rig)
        _, stored = await _send(rig, "{link:flu-clinic}")
        token = URL.search(stored).group(1)  # type: ignore[union-attr]
        statuses = [(await rig.follow(token, **{"User-Agent": IPHONE})).status for _ in range(6)]
        assert statuses == [302, 302, 302, 429, 429, 429]
        limited = await rig.follow("C" * 16)  # guessing other tokens: limited too
        assert limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
        assert len(await rig.clicks()) == 3
        assert [_requests(gw, "limited"), _requests(gw, "gone")] == [4.0, 0.0]
        gw.clock.advance(60.0)  # type: ignore[attr-defined]
        assert (await rig.follow(token, **{"User-Agent": IPHONE})).status == 302


async def test_erasing_a_person_ends_their_short_links(rig: Rig) -> None:
    await _create(rig)
    _, stored = await _send(rig, "{link:flu-clinic}")
    token = URL.search(stored).group(1)  # type: ignore[union-attr]
    assert (await rig.follow(token, **{"User-Agent": IPHONE})).status == 302
    r = await rig.api.post("/api/v1/erasures", {"number": CANARY_NUMBER})
    assert r.status == 200, await r.text()
    assert (await rig.follow(token, **{"User-Agent": IPHONE})).status == 410
    assert await rig.gw.store.reader.all("SELECT * FROM link_tokens") == []


async def test_housekeeping_forgets_expired_tokens_only(rig: Rig) -> None:
    await _create(rig)
    _, old = await _send(rig, "{link:flu-clinic}")
    rig.gw.clock.advance(89 * 86400.0)  # type: ignore[attr-defined]
    _, new = await _send(rig, "{link:flu-clinic}")
    rig.gw.clock.advance(2 * 86400.0)  # type: ignore[attr-defined]
    await rig.gw.housekeeping_once()
    rows = await rig.gw.store.reader.all("SELECT token_hash FROM link_tokens")
    new_token = URL.search(new).group(1)  # type: ignore[union-attr]
    assert [bytes(r[0]) for r in rows] == [tokens.token_hash(new_token)]
    assert (await rig.follow(URL.search(old).group(1))).status == 410  # type: ignore[union-attr]
    assert (await rig.follow(new_token, **{"User-Agent": IPHONE})).status == 302


async def test_a_template_with_a_link_sends_each_notice_its_own_short_url(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(links=LINKS, consent=CONSENT)
    editor = Caller("user:t", None, True, True, False, may_edit_templates=True)
    await gw.links.create(editor, "flu-clinic", FLU, None)
    body = "{clinic}: cita el {start}. Info: {link:flu-clinic} Responda STOP para no recibir mas"
    req = DraftRequest("es", "appointment", {"clinic": {}, "start": {}}, body, None, "reminder",
                       "reminder")  # fmt: skip
    await gw.templates.save(editor, req)
    await _setup(gw)
    gw.clock.advance(24 * 3600.0)  # type: ignore[attr-defined]
    result = await gw.notice_runner(gw.templates.renderer).run_once()
    assert result.queued == 1, result
    [message] = await _messages(gw)
    stored = await gw.store.records.message(message["id"])
    assert stored is not None
    found = URL.search(stored.body.open())
    assert found is not None and "{link:" not in stored.body.open()
    rows = await gw.store.reader.all("SELECT message_id FROM link_tokens")
    assert [r[0] for r in rows] == [message["id"]]


async def test_the_template_preview_and_lint_count_the_short_url(rig: Rig) -> None:
    sample = SHORT_HOST + "/" + "x" * 16  # 48 characters
    draft = {"language": "en", "purpose": "informational", "body": "Flu shots: {link:flu}"}
    r = await rig.api.post("/api/v1/templates/preview", draft)
    [text] = (await r.json())["texts"]
    assert text["text"] == f"Flu shots: {sample}" and text["characters"] == 59
    # A clinical text must fit one SMS with its link as sent: 162 characters with the
    # 48 of the URL (125 with the placeholder as written).
    clinical = (
        "{clinic}: flu shots this week, see " + "x" * 40 + " {link:flu} Reply STOP to opt out"
    )
    lint = {"language": "en", "purpose": "appointment", "variables": {"clinic": {}},
            "body": clinical}  # fmt: skip
    problems = (await (await rig.api.post("/api/v1/templates/lint", lint)).json())["problems"]
    assert [p["rule"] for p in problems] == ["too_long"]
    lint["body"] = clinical.replace("x" * 40, "x" * 30)
    assert (await (await rig.api.post("/api/v1/templates/lint", lint)).json())["ok"] is True
