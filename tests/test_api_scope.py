"""Issue 10 point 9: a token sees and acts on its own messages only, unless it is
`admin`; looking messages up by number needs the `phi` scope (and is audited)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.tokens import SCOPES, create_token
from tests.conftest import CANARY_DIGITS, CANARY_NUMBER, GatewayFactory, state_of
from tests.test_api import Api, _api, _error
from tests.test_cli import _init

ABSENT_ID = "0" * 26  # well-formed, never issued


@pytest.fixture
async def api(open_gateway: GatewayFactory) -> AsyncIterator[Api]:
    gw = await open_gateway()
    async for a in _api(gw):
        yield a


async def _token(api: Api, *scopes: str) -> str:
    return (await create_token(api.gw.store, "t", frozenset(scopes), api.gw.clock)).text


async def _send(api: Api, token: str, **fields: Any) -> str:
    resp = await api.post("/api/v1/messages", {"to": CANARY_NUMBER, "body": "x", **fields}, token)
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["id"])


async def test_another_tokens_message_is_not_found(api: Api) -> None:
    alice = await _token(api, "send", "read")
    bob = await _token(api, "send", "read")
    mid = await _send(api, alice, reference="MRN-0042")

    absent = await api.get(f"/api/v1/messages/{ABSENT_ID}", bob)
    absent_body = await _error(absent, 404, "not_found")
    theirs = await api.get(f"/api/v1/messages/{mid}", bob)
    # Exactly the answer for a message that does not exist: no existence oracle.
    assert await _error(theirs, 404, "not_found") == absent_body
    resp = await api.client.delete(f"/api/v1/messages/{mid}", headers=api.auth(bob))
    assert await _error(resp, 404, "not_found") == absent_body
    listed = await (await api.get("/api/v1/messages", bob)).json()
    assert listed["messages"] == []
    assert await state_of(api.gw, mid) == "queued"

    mine = await (await api.get(f"/api/v1/messages/{mid}", alice)).json()
    assert mine["reference"] == "MRN-0042"
    assert [
        m["id"] for m in (await (await api.get("/api/v1/messages", alice)).json())["messages"]
    ] == [mid]


async def test_admin_sees_every_message_but_not_others_references(api: Api) -> None:
    alice = await _token(api, "send", "read")
    admin = await _token(api, "admin")
    mid = await _send(api, alice, reference="MRN-0042")
    own = await _send(api, admin, reference="mine")

    view = await (await api.get(f"/api/v1/messages/{mid}", admin)).json()
    assert view["id"] == mid
    assert view["reference"] is None  # client-chosen, may hold an MRN: owner only
    assert (await (await api.get(f"/api/v1/messages/{own}", admin)).json())["reference"] == "mine"
    page = await (await api.get("/api/v1/messages", admin)).json()
    assert {m["id"] for m in page["messages"]} == {mid, own}
    assert "MRN-0042" not in json.dumps(page)
    resp = await api.client.delete(f"/api/v1/messages/{mid}", headers=api.auth(admin))
    assert resp.status == 200
    assert await state_of(api.gw, mid) == "cancelled"


async def test_parallel_cancels_by_another_token_never_cancel(api: Api) -> None:
    alice = await _token(api, "send", "read")
    bob = await _token(api, "send", "read")
    mid = await _send(api, alice)
    resps = await asyncio.gather(
        *(api.client.delete(f"/api/v1/messages/{mid}", headers=api.auth(bob)) for _ in range(20)),
        api.client.delete(f"/api/v1/messages/{mid}", headers=api.auth(alice)),
    )
    assert [r.status for r in resps] == [404] * 20 + [200]
    assert await state_of(api.gw, mid) == "cancelled"


async def test_number_lookup_needs_the_phi_scope_and_is_audited(api: Api) -> None:
    plain = await _token(api, "send", "read")
    admin = await _token(api, "send", "read", "admin")
    lookup = await _token(api, "send", "read", "phi")
    await _send(api, plain)
    mine = await _send(api, lookup)
    await _send(api, lookup, to="+12025550199")
    query = "/api/v1/messages?to=%2B1" + CANARY_DIGITS
    for token in (plain, admin):  # admin does not imply phi
        resp = await api.get(query, token)
        error = await _error(resp, 403, "forbidden")
        assert error["field"] == "to"
        assert "phi" in error["message"]
        assert CANARY_DIGITS not in json.dumps(error)
    before = len(await api.gw.audit.entries(limit=1000))
    page = await (await api.get(query, lookup)).json()
    assert [m["id"] for m in page["messages"]] == [mine]  # its own messages only
    entries = await api.gw.audit.entries(limit=1000)
    assert len(entries) == before + 1
    assert entries[0].action == "phi_number_lookup"
    assert CANARY_DIGITS not in repr(entries[0])


def test_smsgw_token_grants_the_phi_scope(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert "phi" in SCOPES
    conf, _ = _init(tmp_path, capsys)
    assert main(["token", "create", "--scope", "read,phi", "--config", str(conf)]) == 0
    token_id = capsys.readouterr().out.strip().split("_")[1]
    assert main(["token", "list", "--config", str(conf)]) == 0
    assert re.search(rf"{token_id}\s+active\s+phi,read\b", capsys.readouterr().out)
