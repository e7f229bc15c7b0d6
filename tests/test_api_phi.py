"""Issue 11 point 2: reading PHI over the API with the `phi` scope, each read audited
by id; inbound paging that never misses or re-reads a message while new ones arrive."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers.base import InboundSms
from gateway.models import new_message_id
from gateway.store.schema import MIGRATIONS, migrate
from gateway.store.store import Store
from tests.conftest import CANARY_BODY, CANARY_DIGITS, CANARY_NUMBER, GatewayFactory
from tests.test_api import Api, _api, _error
from tests.test_api_scope import _send, _token

REPLY = "C to confirm, ward 7B"


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway()
    async for a in _api(gw):
        yield a


async def _inbound(api: Api, sender: str = CANARY_NUMBER, text: str = REPLY) -> str:
    """Store one reply the way a driver hands it over; its id."""
    await api.gw.sink.inbound("main", InboundSms(sender=sender, body=text))
    page = await (await api.get("/api/v1/inbound?limit=1")).json()
    return str(page["inbound"][0]["id"])


async def _phi_reads(api: Api) -> list[tuple[str, str | None, str | None, str]]:
    return [
        (e.actor, e.target_kind, e.target_id, e.detail)
        for e in reversed(await api.gw.audit.entries(limit=1000))
        if e.action == "phi_read"
    ]


async def test_a_phi_token_reads_a_message_whole_and_the_read_is_audited(api: Api) -> None:
    phi = await _token(api, "send", "read", "phi")
    mid = await _send(api, phi, body=CANARY_BODY)
    masked = await (await api.get(f"/api/v1/messages/{mid}", phi)).json()
    assert "to" not in masked and "body" not in masked  # only when asked for
    assert await _phi_reads(api) == []
    whole = await (await api.get(f"/api/v1/messages/{mid}?include=phi", phi)).json()
    assert (whole["to"], whole["body"]) == (CANARY_NUMBER, CANARY_BODY)
    assert whole["to_masked"] == masked["to_masked"]
    token_id = phi.split("_")[1]
    assert await _phi_reads(api) == [(f"token:{token_id}", "message", mid, "{}")]


async def test_without_the_phi_scope_include_phi_is_refused_and_nothing_is_read(
    api: Api,
) -> None:
    plain = await _token(api, "send", "read")
    admin = await _token(api, "send", "read", "admin")
    mid = await _send(api, plain, body=CANARY_BODY)
    iid = await _inbound(api)
    for token in (plain, admin):  # admin does not imply phi
        for path in (
            f"/api/v1/messages/{mid}?include=phi",
            f"/api/v1/inbound/{iid}?include=phi",
            "/api/v1/inbound?include=phi",
        ):
            error = await _error(await api.get(path, token), 403, "forbidden")
            assert error["field"] == "include"
            assert CANARY_DIGITS not in json.dumps(error) and "CANARY" not in json.dumps(error)
    await _error(await api.get(f"/api/v1/messages/{mid}?include=all", plain), 400, "invalid_query")
    assert await _phi_reads(api) == []


async def test_a_phi_token_reads_only_its_own_messages_whole(api: Api) -> None:
    alice = await _token(api, "send", "read")
    snoop = await _token(api, "send", "read", "phi")
    mid = await _send(api, alice, body=CANARY_BODY)
    resp = await api.get(f"/api/v1/messages/{mid}?include=phi", snoop)
    await _error(resp, 404, "not_found")
    assert await _phi_reads(api) == []


async def test_inbound_by_id_masked_or_whole_with_the_phi_scope(api: Api) -> None:
    reader = await _token(api, "read")
    phi = await _token(api, "read", "phi")
    iid = await _inbound(api)
    masked = await (await api.get(f"/api/v1/inbound/{iid}", reader)).json()
    assert masked["id"] == iid and masked["route"] == "main"
    assert masked["sender_masked"] == "+120••••••47"
    assert "sender" not in masked and "text" not in masked
    assert CANARY_DIGITS not in json.dumps(masked) and REPLY not in json.dumps(masked)
    whole = await (await api.get(f"/api/v1/inbound/{iid}?include=phi", phi)).json()
    assert (whole["sender"], whole["text"]) == (CANARY_NUMBER, REPLY)
    await _error(await api.get(f"/api/v1/inbound/{'0' * 26}", phi), 404, "not_found")
    token_id = phi.split("_")[1]
    assert await _phi_reads(api) == [(f"token:{token_id}", "inbound", iid, "{}")]


async def test_the_inbound_list_on_request_audits_every_id_it_shows(api: Api) -> None:
    phi = await _token(api, "read", "phi")
    ids = [await _inbound(api, text=f"reply {i}") for i in range(3)]
    page = await (await api.get("/api/v1/inbound?include=phi&limit=2", phi)).json()
    shown = [m["id"] for m in page["inbound"]]
    assert shown == ids[::-1][:2]
    assert [m["text"] for m in page["inbound"]] == ["reply 2", "reply 1"]
    reads = await _phi_reads(api)
    assert [(kind, target) for _, kind, target, _ in reads] == [("inbound", i) for i in shown]
    assert all(CANARY_DIGITS not in detail and "reply" not in detail for *_, detail in reads)
    plain = await (await api.get("/api/v1/inbound?limit=2", phi)).json()
    assert all("text" not in m for m in plain["inbound"])
    assert len(await _phi_reads(api)) == 2


async def _poll(api: Api, token: str, cursor: str, limit: int) -> tuple[list[str], str]:
    resp = await api.get(f"/api/v1/inbound?order=oldest&cursor={cursor}&limit={limit}", token)
    assert resp.status == 200, await resp.text()
    page = await resp.json()
    return [m["id"] for m in page["inbound"]], str(page["next_cursor"])


async def test_polling_never_misses_or_rereads_while_messages_arrive(api: Api) -> None:
    """Ids are made before their commit, so a later id can commit first: here every
    round commits the ids of the round in reverse, while a poller reads concurrently."""
    reader = await _token(api, "read")
    store = api.gw.store
    stored: list[str] = []
    seen: list[str] = []
    cursor = "0"

    async def commit(inbound_id: str) -> None:
        await store.insert_inbound(inbound_id, "main", CANARY_NUMBER, "x", None, None, 1.0)
        stored.append(inbound_id)

    async def poll() -> None:
        nonlocal cursor
        ids, cursor = await _poll(api, reader, cursor, 2)
        seen.extend(ids)

    async def poll_twice() -> None:  # one client: each poll starts from the last answer
        await poll()
        await poll()

    for _ in range(6):
        early, late = new_message_id(), new_message_id()
        await commit(late)
        await asyncio.gather(poll_twice(), commit(early))
    while True:
        before = len(seen)
        await poll()
        if len(seen) == before:
            break
    assert len(seen) == len(set(seen)), "a message was read twice"
    assert sorted(seen) == sorted(stored), "a message was missed"
    assert seen == stored  # in commit order
    _, again = await _poll(api, reader, cursor, 2)
    assert again == cursor  # nothing new: poll again from the same place


async def test_newest_first_pages_are_unmoved_by_arrivals(api: Api) -> None:
    reader = await _token(api, "read")
    old = [await _inbound(api, text=f"r{i}") for i in range(5)]
    first = await (await api.get("/api/v1/inbound?limit=2", reader)).json()
    for i in range(3):
        await api.gw.sink.inbound("main", InboundSms(sender=CANARY_NUMBER, body=f"new {i}"))
    seen = [m["id"] for m in first["inbound"]]
    cursor = first["next_cursor"]
    while cursor is not None:
        page = await (await api.get(f"/api/v1/inbound?limit=2&cursor={cursor}", reader)).json()
        seen += [m["id"] for m in page["inbound"]]
        cursor = page["next_cursor"]
    assert seen == old[::-1]


async def test_cursors_are_checked(api: Api) -> None:
    for query in ("order=oldest&cursor=abc", "cursor=-1", "cursor=01ABC", "cursor=" + "9" * 19):
        error = await _error(await api.get(f"/api/v1/inbound?{query}"), 400, "invalid_query")
        assert error["field"] == "cursor"
    error = await _error(await api.get("/api/v1/inbound?order=up"), 400, "invalid_query")
    assert error["field"] == "order"
    first = await (await api.get("/api/v1/inbound?order=oldest")).json()
    assert first == {"inbound": [], "next_cursor": "0"}


async def test_migration_numbers_inbound_rows_stored_before_it_in_id_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    # The store as it was just before the migration that numbers inbound rows.
    before = next(i for i, m in enumerate(MIGRATIONS) if "inbound ADD COLUMN seq" in m)
    for script in MIGRATIONS[:before]:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version = {before}")
    for inbound_id in ("01C", "01A", "01B"):
        conn.execute(
            "INSERT INTO inbound (id, route, sender_ct, sender_index, body_ct, received_at)"
            " VALUES (?, 'main', x'00', x'00', x'00', 1.0)",
            (inbound_id,),
        )
    assert migrate(conn) == len(MIGRATIONS)
    rows = conn.execute("SELECT id, seq FROM inbound ORDER BY seq").fetchall()
    assert rows == [("01A", 1), ("01B", 2), ("01C", 3)]
    conn.close()
    store = Store(path, bytes(32))
    await store.open()
    try:
        await store.insert_inbound("00NEW", "main", CANARY_NUMBER, "x", None, None, 2.0)
        newest = await store.records.inbound_newest(None, 1)
        assert [(r.id, r.seq) for r in newest] == [("00NEW", 4)]
    finally:
        await store.close()


async def test_the_message_list_on_request_audits_every_id_it_shows(api: Api) -> None:
    phi = await _token(api, "send", "read", "phi")
    plain = await _token(api, "send", "read")
    ids = [await _send(api, phi, body=f"body {i}") for i in range(3)]
    page = await (await api.get("/api/v1/messages?include=phi&limit=2", phi)).json()
    assert [(m["id"], m["to"], m["body"]) for m in page["messages"]] == [
        (ids[2], CANARY_NUMBER, "body 2"),
        (ids[1], CANARY_NUMBER, "body 1"),
    ]
    reads = await _phi_reads(api)
    assert [(kind, target) for _, kind, target, _ in reads] == [
        ("message", ids[2]),
        ("message", ids[1]),
    ]
    error = await _error(await api.get("/api/v1/messages?include=phi", plain), 403, "forbidden")
    assert error["field"] == "include"
    assert len(await _phi_reads(api)) == 2
