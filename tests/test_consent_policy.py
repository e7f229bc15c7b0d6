"""Issue 12 points 1 and 4: a purpose on every send, and the policy enforced at accept
and again at claim (MSG-1, MSG-2, MSG-5, MSG-7's emergency rule)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.consent import token_purposes
from gateway.consent.purposes import Purpose
from gateway.errors import ApiError
from gateway.intake import SendRequest
from gateway.models import Priority, State
from gateway.store.claim_check import ClaimSubject
from gateway.tokens import create_token
from gateway.usecases import Caller
from tests.conftest import (
    CANARY_NUMBER,
    GatewayFactory,
    record_decision,
    state_of,
)
from tests.store_rows import message_row
from tests.test_api import start_client

# Every purpose sendable at any hour and without caps, so only consent decides here.
ANY_TIME = {"window": "", "caps": []}
OPEN_POLICY: dict[str, Any] = {
    "purposes": dict.fromkeys(
        ("appointment", "results", "informational", "marketing", "emergency"), ANY_TIME
    )
}


async def caller(gw: Gateway, *scopes: str, purpose: str | None = None) -> Caller:
    token = await create_token(gw.store, "t", frozenset(scopes), gw.clock)
    if purpose is not None:
        await token_purposes.set_default(gw.store, token.id, purpose)
    record = await gw.store.api_tokens.get(token.id)
    assert record is not None
    return Caller.for_token(record)


async def send(gw: Gateway, who: Caller, **fields: Any) -> Any:
    fields.setdefault("to", CANARY_NUMBER)
    fields.setdefault("body", "hello")
    return await gw.usecases.messages.accept(who, SendRequest(**fields))


async def error_code(gw: Gateway, message_id: str) -> str | None:
    row = await message_row(gw.store, message_id)
    assert row is not None
    return row["error_code"]


# -- point 1: purpose on every send ----------------------------------------------------


async def test_a_send_without_a_purpose_and_no_default_is_refused_and_stores_nothing(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(consent={})
    who = await caller(gw, "send")
    with pytest.raises(ApiError) as refused:
        await send(gw, who)
    assert (refused.value.status, refused.value.code, refused.value.field) == (
        422,
        "missing_purpose",
        "purpose",
    )
    cur = await gw.store.reader.execute("SELECT count(*) FROM messages")
    assert (await cur.fetchone())[0] == 0


async def test_purpose_comes_from_the_request_else_the_token_else_the_config(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(consent={"default_purpose": "results", **OPEN_POLICY})
    plain = await caller(gw, "send", "read")
    pharmacy = await caller(gw, "send", "read", purpose="appointment")
    named = await send(gw, pharmacy, purpose="informational")
    by_token = await send(gw, pharmacy)
    by_config = await send(gw, plain)
    purposes = [
        (await gw.usecases.messages.get(who, a.id)).purpose
        for who, a in ((pharmacy, named), (pharmacy, by_token), (plain, by_config))
    ]
    assert purposes == ["informational", "appointment", "results"]
    # The purpose maps to its class: results go `high`, appointments `normal`.
    assert (by_config.priority, by_token.priority) == ("high", "normal")


async def test_compliance_cannot_be_named_and_a_class_above_the_purpose_is_refused(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(consent=OPEN_POLICY)
    who = await caller(gw, "send")
    client = await start_client(gw)
    token = await create_token(gw.store, "api", frozenset({"send"}), gw.clock)
    headers = {"Authorization": f"Bearer {token.text}"}
    try:
        resp = await client.post(
            "/api/v1/messages",
            data=json.dumps({"to": CANARY_NUMBER, "body": "x", "purpose": "compliance"}),
            headers=headers,
        )
        assert resp.status == 422
        assert (await resp.json())["error"]["field"] == "purpose"
    finally:
        await client.close()
    with pytest.raises(ApiError) as refused:
        await send(gw, who, purpose="marketing", priority="critical")
    assert (refused.value.code, refused.value.field) == ("priority_not_allowed", "priority")
    accepted = await send(gw, who, purpose="emergency")
    assert accepted.priority == "critical"


async def test_purpose_is_shown_in_the_api_view_and_documented(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(consent={"default_purpose": "appointment", **OPEN_POLICY})
    client = await start_client(gw)
    token = await create_token(gw.store, "api", frozenset({"send", "read"}), gw.clock)
    headers = {"Authorization": f"Bearer {token.text}"}
    try:
        resp = await client.post(
            "/api/v1/messages", data=json.dumps({"to": CANARY_NUMBER, "body": "x"}), headers=headers
        )
        assert resp.status == 202
        mid = (await resp.json())["id"]
        view = await (await client.get(f"/api/v1/messages/{mid}", headers=headers)).json()
        assert view["purpose"] == "appointment"
        doc = await (await client.get("/api/v1/openapi.json", headers=headers)).json()
        send_schema = doc["components"]["schemas"]["SendRequest"]["properties"]
        assert "compliance" not in json.dumps(send_schema["purpose"])
        assert "blocked" in doc["paths"]["/api/v1/messages"]["post"]["summary"]
    finally:
        await client.close()


# -- point 4: blocked at accept --------------------------------------------------------


async def test_marketing_without_written_consent_is_blocked_and_the_answer_says_so(
    open_gateway: GatewayFactory,
) -> None:
    """MSG-2: a marketing send to a number with no written consent is stored `blocked`
    (`no_consent`) and never queued; with written consent recorded it goes."""
    gw = await open_gateway(consent=OPEN_POLICY)
    client = await start_client(gw)
    token = await create_token(gw.store, "api", frozenset({"send", "read"}), gw.clock)
    headers = {"Authorization": f"Bearer {token.text}"}
    item = {"to": CANARY_NUMBER, "body": "Flu clinic Saturday", "purpose": "marketing"}
    try:
        resp = await client.post("/api/v1/messages", data=json.dumps(item), headers=headers)
        assert resp.status == 202
        blocked = await resp.json()
        assert (blocked["status"], blocked["reason"]) == ("blocked", "no_consent")
        await record_decision(
            gw, CANARY_NUMBER, "opt_in", "purpose:marketing", disclosure="I agree to offers"
        )
        other = {"to": "+12025550123", "body": "x", "purpose": "appointment"}
        batch = {"messages": [item, other]}
        resp = await client.post("/api/v1/messages/batch", data=json.dumps(batch), headers=headers)
        assert resp.status == 202
        results = (await resp.json())["results"]
        assert [r["status"] for r in results] == ["queued", "queued"]
        assert all("reason" not in r for r in results)
    finally:
        await client.close()
    assert await state_of(gw, blocked["id"]) == "blocked"
    assert await error_code(gw, blocked["id"]) == "no_consent"
    events = await gw.store.records.events(blocked["id"])
    assert [(e.state, e.error_code) for e in events] == [("blocked", "no_consent")]
    await gw.scheduler.run_until_idle()
    assert [await state_of(gw, r["id"]) for r in results] == ["sent", "sent"]


async def test_an_opt_out_blocks_its_scope_at_accept_per_item_in_a_batch(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(consent=OPEN_POLICY)
    who = await caller(gw, "send")
    await record_decision(gw, CANARY_NUMBER, "opt_out", "kind:clinical")
    batch = await gw.usecases.messages.accept_batch(
        who,
        [
            SendRequest(to=CANARY_NUMBER, body="a", purpose="appointment"),
            SendRequest(to=CANARY_NUMBER, body="b", purpose="informational"),
            SendRequest(to="+12025550123", body="c", purpose="appointment"),
        ],
    )
    assert [(r.status, r.reason) for r in batch.results] == [
        ("blocked", "opted_out"),
        ("queued", None),
        ("queued", None),
    ]
    assert batch.accepted == 3  # stored, each with its verdict


async def test_an_opt_out_committed_after_accept_blocks_the_message_at_claim(
    open_gateway: GatewayFactory,
) -> None:
    """MSG-5: the claim re-checks consent in its own transaction; nothing leaves."""
    gw = await open_gateway(consent=OPEN_POLICY)
    who = await caller(gw, "send")
    queued = await send(gw, who, purpose="appointment")
    other = await send(gw, who, purpose="appointment", to="+12025550123")
    assert queued.status == "queued"
    await record_decision(gw, CANARY_NUMBER, "opt_out", "purpose:appointment")
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, queued.id) == "blocked"
    assert await error_code(gw, queued.id) == "opted_out"
    assert await state_of(gw, other.id) == "sent"
    events = await gw.store.records.events(queued.id)
    assert [(e.state, e.error_code) for e in events] == [("queued", None), ("blocked", "opted_out")]


async def test_emergency_follows_stop_all_only_unless_the_site_ignores_opt_outs(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(consent=OPEN_POLICY)
    who = await caller(gw, "send")
    await record_decision(gw, CANARY_NUMBER, "opt_out", "kind:clinical")
    assert (await send(gw, who, purpose="emergency")).status == "queued"
    await record_decision(gw, CANARY_NUMBER, "opt_out", "all")
    stopped = await send(gw, who, purpose="emergency")
    assert (stopped.status, stopped.reason) == ("blocked", "opted_out")
    await gw.stop()

    ignoring = {"purposes": {"emergency": {"opt_out": "ignore"}}}
    gw = await open_gateway(consent=ignoring)
    who = await caller(gw, "send")
    assert (await send(gw, who, purpose="emergency")).status == "queued"


async def test_compliance_messages_are_never_blocked(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(consent=OPEN_POLICY)
    await record_decision(gw, CANARY_NUMBER, "opt_out", "all")
    idx = gw.store.blind_index(CANARY_NUMBER)
    policy = gw.intake.policy

    def job(conn: Any) -> tuple[Any, str | None]:
        verdict = policy.decide(
            conn,
            to=CANARY_NUMBER,
            to_index=idx,
            purpose=Purpose.COMPLIANCE,
            priority=gw.intake.policy.priority_of(Purpose.COMPLIANCE, None),
            route="main",
            start=gw.clock.time(),
            expires_at=gw.clock.time() + 60,
        )
        subject = ClaimSubject(
            "m", idx, b"", "compliance", Priority.HIGH, False, "main", gw.clock.time()
        )
        return verdict, policy.claim_verdict(conn, subject, lambda s: CANARY_NUMBER)

    verdict, at_claim = await gw.store.writer.run(job)
    assert (verdict.state, verdict.reason, at_claim) == (State.QUEUED, None, None)


async def test_consent_disabled_switches_every_check_off(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway(consent={"enabled": False, **OPEN_POLICY})
    who = await caller(gw, "send")
    await record_decision(gw, CANARY_NUMBER, "opt_out", "all")
    accepted = await send(gw, who, purpose="marketing")
    assert accepted.status == "queued"
    await gw.scheduler.run_until_idle()
    assert await state_of(gw, accepted.id) == "sent"


async def test_the_panel_shows_a_messages_purpose_and_why_it_was_blocked(panel: Any) -> None:
    from gateway.panel_users import Role

    await panel.add_user("op", Role.OPERATOR)
    await panel.login_ok("op")
    who = await caller(panel.gw, "send")
    blocked = await send(panel.gw, who, purpose="marketing")
    page = await (await panel.client.get(f"/messages/{blocked.id}")).text()
    assert "<dt>Purpose</dt><dd>marketing</dd>" in page
    assert "no_consent" in page


def test_token_create_purpose_sets_the_tokens_default(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    from gateway.cli import main
    from gateway.store import crypto
    from gateway.store.store import Store

    assert main(["init", "--data-dir", str(tmp_path)]) == 0
    conf = str(tmp_path / "smsgw.toml")
    capsys.readouterr()
    args = ["token", "create", "--scope", "send", "--purpose", "appointment", "--config", conf]
    assert main(args) == 0
    token_id = capsys.readouterr().out.strip().split("_")[1]
    with pytest.raises(SystemExit):
        main(["token", "create", "--purpose", "compliance", "--config", conf])

    async def read() -> str | None:
        store = Store(tmp_path / "smsgw.db", crypto.read_master_key(tmp_path / "master.key"))
        await store.open()
        try:
            return await token_purposes.read_default(store, token_id)
        finally:
            await store.close()

    assert asyncio.run(read()) == "appointment"
