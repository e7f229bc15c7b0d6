"""Issue 11 point 1: the application layer as other front ends (MQTT, Kannel) call it."""

from __future__ import annotations

import pytest

from gateway.errors import ApiError
from gateway.intake import SendRequest
from gateway.models import State
from gateway.store.transitions import Transition
from gateway.tokens import create_token
from gateway.usecases import Caller
from tests.conftest import CANARY_BODY, CANARY_DIGITS, CANARY_NUMBER, GatewayFactory, state_of


async def _caller(gw: object, *scopes: str) -> Caller:
    from gateway.app import Gateway

    assert isinstance(gw, Gateway)
    token = await create_token(gw.store, "t", frozenset(scopes), gw.clock)
    record = await gw.store.api_tokens.get(token.id)
    assert record is not None
    return Caller.for_token(record)


async def test_accept_takes_a_request_and_a_caller_and_returns_the_accepted_record(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    sender = await _caller(gw, "send", "read")
    accepted = await gw.usecases.messages.accept(sender, SendRequest(to=CANARY_NUMBER, body="hi"))
    assert (accepted.status, accepted.priority, accepted.segments) == ("queued", "normal", 1)
    assert await state_of(gw, accepted.id) == "queued"
    record = await gw.usecases.messages.get(sender, accepted.id)
    assert record.status is State.QUEUED and record.to is None and record.body is None
    with pytest.raises(ApiError) as refused:
        await gw.usecases.messages.accept(sender, SendRequest(to="12", body=CANARY_BODY))
    assert (refused.value.status, refused.value.code, refused.value.field) == (
        422,
        "invalid_number",
        "to",
    )
    reader = await _caller(gw, "read")
    with pytest.raises(ApiError) as forbidden:
        await gw.usecases.messages.accept(reader, SendRequest(to=CANARY_NUMBER, body="x"))
    assert forbidden.value.code == "forbidden"
    gw.accepting = False
    with pytest.raises(ApiError) as closing:
        await gw.usecases.messages.accept(sender, SendRequest(to=CANARY_NUMBER, body="x"))
    assert (closing.value.status, closing.value.code) == (503, "shutting_down")


async def test_records_are_masked_for_their_caller(open_gateway: GatewayFactory) -> None:
    gw = await open_gateway()
    sender = await _caller(gw, "send", "read")
    mid = (
        await gw.usecases.messages.accept(
            sender, SendRequest(to=CANARY_NUMBER, body=CANARY_BODY, reference="ref-1")
        )
    ).id
    api = await gw.usecases.messages.get(sender, mid)
    assert (api.to_masked, api.body_masked, api.reference) == ("+120••••••47", None, "ref-1")
    operator = Caller.for_panel_user("user:op", reads_phi=True, acts=True)
    seen = await gw.usecases.messages.get(operator, mid)
    assert seen.to_masked == "+1 202 ••• ••47"
    assert seen.body_masked == f"•••••• ({len(CANARY_BODY)} characters)"
    assert seen.reference is None  # the sender's own reference
    viewer = Caller.for_panel_user("user:v", reads_phi=False, acts=False)
    hidden = await gw.usecases.messages.get(viewer, mid)
    assert (hidden.to_masked, hidden.body_masked, hidden.to, hidden.body) == (None,) * 4
    assert CANARY_DIGITS not in repr(hidden)
    with pytest.raises(ApiError):
        await gw.usecases.messages.reveal(viewer, mid)


async def test_retry_copies_a_failed_message_for_its_original_token(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    sender = await _caller(gw, "send", "read")
    other = await _caller(gw, "send", "read")
    mid = (await gw.usecases.messages.accept(sender, SendRequest(to=CANARY_NUMBER, body="x"))).id
    with pytest.raises(ApiError) as early:
        await gw.usecases.messages.retry(sender, mid)
    assert early.value.code == "not_retryable"
    gw.scheduler.forget(mid)
    await gw.store.transition(Transition(mid, State.FAILED, error_code="test:x"), 0.0)
    with pytest.raises(ApiError) as theirs:
        await gw.usecases.messages.retry(other, mid)
    assert theirs.value.code == "not_found"
    copy = await gw.usecases.messages.retry(sender, mid)
    assert (await gw.usecases.messages.get(sender, copy.id)).status is State.QUEUED
    newest = (await gw.audit.entries(limit=1))[0]
    assert (newest.action, newest.target_id) == ("message_retried", mid)
