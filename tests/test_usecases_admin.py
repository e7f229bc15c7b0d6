"""Issue 11 point 1 (leftovers): API tokens, the dashboard's activity stream, event
deliveries and held records go through the application layer, which audits every
change; the panel, the API and the CLI call it rather than the store."""

from __future__ import annotations

import asyncio

from gateway.app import Gateway
from gateway.models import State
from gateway.store.transitions import Transition
from gateway.tokens import TokenRecord
from gateway.usecases import Caller
from tests.conftest import GatewayFactory, accept


async def _audited(gw: Gateway, action: str) -> list[tuple[str, str | None]]:
    return [(e.actor, e.target_id) for e in await gw.audit.entries() if e.action == action]


async def test_tokens_are_created_listed_and_revoked_with_an_audit_entry_each(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    tokens = gw.usecases.tokens
    new = await tokens.create("user:u1", "ehr", frozenset({"send", "read"}))
    assert new.text.startswith(f"smsgw_{new.id}_")
    (listed,) = await tokens.list()
    assert isinstance(listed, TokenRecord)
    assert (listed.id, listed.name, listed.scopes, listed.revoked_at) == (
        new.id,
        "ehr",
        frozenset({"send", "read"}),
        None,
    )
    assert await tokens.names() == {new.id: "ehr"}
    (created,) = [e for e in await gw.audit.entries() if e.action == "token_created"]
    assert (created.actor, created.target_id, created.detail_map()) == (
        "user:u1",
        new.id,
        {"scopes": "read,send"},
    )
    assert new.secret not in created.detail  # the secret is answered once, never stored

    assert await gw.tokens.verify(new.text) is not None  # cached now
    assert await tokens.revoke("user:u1", new.id)
    assert await gw.tokens.verify(new.text) is None  # the running gateway forgot it at once
    assert (await tokens.list())[0].revoked_at == gw.clock.time()
    assert await _audited(gw, "token_revoked") == [("user:u1", new.id)]


async def test_a_token_revoked_in_parallel_is_revoked_and_audited_once(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    token = await gw.usecases.tokens.create("console", "t", frozenset({"read"}))
    results = await asyncio.gather(
        *(gw.usecases.tokens.revoke(f"user:u{i}", token.id) for i in range(8))
    )
    assert sorted(results) == [False] * 7 + [True]
    assert len(await _audited(gw, "token_revoked")) == 1
    assert not await gw.usecases.tokens.revoke("user:u1", "000000000000")  # no such token
    assert len(await _audited(gw, "token_revoked")) == 1


async def test_activity_answers_typed_changes_after_a_position_without_personal_fields(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    activity = gw.usecases.activity
    start = await activity.position_before(gw.clock.time())
    mid, other = await accept(gw), await accept(gw)
    await gw.store.transition(
        Transition(mid, State.FAILED, error_code="smpp:0x0000000b"), gw.clock.time()
    )
    await gw.usecases.messages.cancel(
        Caller.for_panel_user("user:u1", reads_phi=False, acts=True), other
    )
    failed, cancelled = await activity.after(start, 10)
    assert (failed.state, failed.error_code, cancelled.state) == (
        "failed",
        "smpp:0x0000000b",
        "cancelled",
    )
    assert failed.position < cancelled.position
    assert await activity.after(cancelled.position, 10) == []
    assert await activity.after(start, 1) == [failed]  # the limit holds; resume from there
    assert await activity.after(failed.position, 10) == [cancelled]
    # State, route, code and time only: nothing that names a message or a patient.
    assert set(type(cancelled).__slots__) == {"position", "at", "state", "route", "error_code"}
    assert await activity.position_before(gw.clock.time() + 60) == cancelled.position


async def test_redelivering_for_an_unknown_consumer_writes_and_audits_nothing(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    deliveries = gw.usecases.deliveries
    assert deliveries.consumers() == []
    assert not await deliveries.redeliver("user:u1", "nobody", 1)
    assert await _audited(gw, "webhook_redelivered") == []
    assert await deliveries.recent(10) == [] and await deliveries.dead(10) == []


async def test_held_record_summary_is_a_count(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    assert (await gw.usecases.undecodable.summary()).held == 0
    await gw.sink.quarantine("sim", "modem1", "07FF00")
    summary = await gw.usecases.undecodable.summary()
    assert summary.held == 1 and summary.oldest_at == gw.clock.time()
