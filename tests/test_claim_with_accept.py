"""At a trickle a message is claimed in its accept's transaction (issue 16, point 3).

With nothing waiting and nothing in flight, the scheduler claims a message due now in
the writer transaction that stores it, when a route takes it by the round's own rules
(health, rate token, window room): `queued` and `sending` commit together, one commit
and one fsync instead of two (`bench/diskwrites.py`). The guarantees stay: `sending`
is committed before the answer and before the driver sees a byte, the send-time policy
check runs in that claim, priority order and rate limits hold (anything waiting turns
it off), and after a crash the message comes back flagged as a possible duplicate.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.intake import SendRequest
from gateway.store.claim_check import ClaimSubject, Held
from gateway.tokens import create_token
from gateway.usecases import Caller
from tests.conftest import (
    CANARY_NUMBER,
    GatewayFactory,
    loopback,
    make_config,
    record_decision,
    state_of,
)

WAIT = 10.0
OTHER = "+12025550123"
OPEN_POLICY: dict[str, Any] = {"enabled": True, "purposes": {"appointment": {"window": ""}}}


async def _running(open_gateway: GatewayFactory, **sections: Any) -> Gateway:
    """A gateway with its dispatch loop running (on the fake clock)."""
    gw = await open_gateway(start=False, **sections)
    await gw.start()
    await asyncio.sleep(0)  # one turn of the loop: the dispatch task has started
    return gw


async def _caller(gw: Gateway) -> Caller:
    token = await create_token(gw.store, "t", frozenset({"send"}), gw.clock)
    record = await gw.store.api_tokens.get(token.id)
    assert record is not None
    return Caller.for_token(record)


def _committed(gw: Gateway, message_id: str) -> tuple[str, int]:
    """State and duplicate flag as another connection sees them: what is committed."""
    conn = sqlite3.connect(f"file:{gw.store.path}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT state, possible_duplicate FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
    finally:
        conn.close()
    return str(row[0]), int(row[1])


async def _idle(gw: Gateway) -> None:
    """Until what was dispatched has its outcome committed."""
    await asyncio.wait_for(gw.scheduler.run_until_idle(), WAIT)
    await asyncio.wait_for(gw.store.writer.drain(), WAIT)


async def test_at_a_trickle_sending_commits_with_the_accept_before_any_byte(
    open_gateway: GatewayFactory,
) -> None:
    gw = await _running(open_gateway)
    who = await _caller(gw)
    answer = await gw.usecases.messages.accept(who, SendRequest(to=CANARY_NUMBER, body="hi"))
    # No await since the accept returned: the driver has seen nothing, and `sending`
    # is committed already (in the accept's transaction: the claim was never awaited).
    assert loopback(gw).health().counters["submitted"] == 0
    assert _committed(gw, answer.id) == ("sending", 0)
    await _idle(gw)
    assert loopback(gw).health().counters["submitted"] == 1
    events = await gw.store.events(answer.id)
    assert [e.state for e in events] == ["queued", "sending", "sent"]
    assert events[1].route == "main" and events[1].attempt == 1


async def test_a_waiting_message_or_an_empty_bucket_keeps_the_claim_for_the_round(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """Rate 1/s: the first message takes the token with its accept; the next waits
    `queued` for the next token; a bulk and a critical one accepted meanwhile are not
    claimed with their accept (a message waits), and leave in class order."""
    gw = await _running(
        open_gateway,
        routes=[{"name": "main", "type": "loopback", "latency": 0, "rate": 1, "burst": 1}],
    )
    who = await _caller(gw)
    messages = gw.usecases.messages
    first = await messages.accept(who, SendRequest(to=CANARY_NUMBER, body="1"))
    assert _committed(gw, first.id)[0] == "sending"
    await _idle(gw)
    normal = await messages.accept(who, SendRequest(to=CANARY_NUMBER, body="2"))
    bulk = await messages.accept(who, SendRequest(to=OTHER, body="3", priority="bulk"))
    critical = await messages.accept(who, SendRequest(to=OTHER, body="4", priority="critical"))
    for m in (normal, bulk, critical):
        assert _committed(gw, m.id)[0] == "queued"
    order = []
    for _ in range(3):
        clock.advance(1.0)
        await _idle(gw)
        sent = [m.id for m in (normal, bulk, critical) if await state_of(gw, m.id) == "sent"]
        order += [m for m in sent if m not in order]
    assert order == [critical.id, normal.id, bulk.id]
    assert loopback(gw).health().counters["submitted"] == 4


async def test_under_load_a_critical_message_is_claimed_with_its_accept(
    open_gateway: GatewayFactory,
) -> None:
    """Bulk waiting and the route busy: a bulk message accepted now waits `queued` for
    a round, a critical one is `sending` as its accept commits (the route's critical
    lane), and the carrier's window still holds."""
    gw = await _running(
        open_gateway, routes=[{"name": "main", "type": "loopback", "latency": 5, "window": 1}]
    )
    who = await _caller(gw)
    messages = gw.usecases.messages
    backlog = [
        await messages.accept(who, SendRequest(to=OTHER, body=f"b{i}", priority="bulk"))
        for i in range(8)
    ]
    await asyncio.wait_for(gw.store.writer.drain(), WAIT)
    assert "queued" in {_committed(gw, m.id)[0] for m in backlog}
    bulk = await messages.accept(who, SendRequest(to=OTHER, body="late", priority="bulk"))
    critical = await messages.accept(
        who, SendRequest(to=CANARY_NUMBER, body="urgent", priority="critical")
    )
    assert _committed(gw, bulk.id)[0] == "queued"
    assert _committed(gw, critical.id)[0] == "sending"
    await asyncio.sleep(0)  # one turn of the loop: the critical's dispatch has started
    assert loopback(gw).health().in_flight == 1  # the carrier's window of one still holds


async def test_a_critical_message_is_claimed_with_its_accept_when_bulk_just_took_the_token(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """Rate 100/s, burst 1, bulk waiting behind the token the first bulk message took: a
    critical message is `sending` as its accept commits all the same (it takes the next
    token ahead of the bulk, S6), not queued for a round and a claim of its own; the
    driver sees it when that token comes, and the bulk waits for the one after."""
    gw = await _running(
        open_gateway,
        routes=[{"name": "main", "type": "loopback", "latency": 0, "rate": 100, "burst": 1}],
    )
    who = await _caller(gw)
    messages = gw.usecases.messages
    bulk = [
        await messages.accept(who, SendRequest(to=OTHER, body=f"b{i}", priority="bulk"))
        for i in range(3)
    ]
    await _idle(gw)
    assert loopback(gw).health().counters["submitted"] == 1  # the token there was
    critical = await messages.accept(
        who, SendRequest(to=CANARY_NUMBER, body="urgent", priority="critical")
    )
    assert _committed(gw, critical.id)[0] == "sending"
    assert loopback(gw).health().counters["submitted"] == 1  # its token is not here yet
    clock.advance(0.01)
    await _idle(gw)
    assert await state_of(gw, critical.id) == "sent"
    assert [_committed(gw, m.id)[0] for m in bulk] == ["sent", "queued", "queued"]


async def test_the_claim_with_the_accept_runs_the_send_time_policy_check(
    open_gateway: GatewayFactory,
) -> None:
    """The claim's consent check runs in the accept's transaction; a message the
    policy blocked at accept is left `blocked` and never reaches the driver."""
    gw = await _running(open_gateway, consent=OPEN_POLICY)
    checked: list[str] = []
    check = gw.store.claim_check
    assert check is not None

    def counted(conn: sqlite3.Connection, s: ClaimSubject) -> str | Held | None:
        checked.append(s.message_id)
        return check(conn, s)

    gw.store.claim_check = counted
    who = await _caller(gw)
    await record_decision(gw, OTHER, "opt_out", "kind:clinical")
    sent = await gw.usecases.messages.accept(
        who, SendRequest(to=CANARY_NUMBER, body="a", purpose="appointment")
    )
    assert checked == [sent.id]
    assert _committed(gw, sent.id)[0] == "sending"
    await _idle(gw)
    blocked = await gw.usecases.messages.accept(
        who, SendRequest(to=OTHER, body="b", purpose="appointment")
    )
    assert (blocked.status, blocked.reason) == ("blocked", "opted_out")
    await _idle(gw)
    assert await state_of(gw, blocked.id) == "blocked"
    assert await state_of(gw, sent.id) == "sent"
    assert loopback(gw).health().counters["submitted"] == 1
    assert [e.state for e in await gw.store.events(blocked.id)] == ["blocked"]


async def test_a_crash_after_the_accept_brings_the_message_back_flagged(
    open_gateway: GatewayFactory, tmp_path: Path, clock: FakeClock
) -> None:
    """The data directory copied right after the accept returned, before the driver
    saw the message (what a kill -9 then leaves): a gateway opened on the copy finds
    it `sending`, requeues it as a possible duplicate, and sends it."""
    gw = await _running(open_gateway)
    who = await _caller(gw)
    answer = await gw.usecases.messages.accept(who, SendRequest(to=CANARY_NUMBER, body="hi"))
    crashed = tmp_path.parent / f"{tmp_path.name}-crashed"
    shutil.copytree(tmp_path, crashed)
    assert loopback(gw).health().counters["submitted"] == 0
    again = await Gateway.open(make_config(crashed), clock)
    try:
        await again.start(dispatch=False)
        assert _committed(again, answer.id) == ("queued", 1)
        await again.scheduler.run_until_idle()
        assert await state_of(again, answer.id) == "sent"
    finally:
        await again.stop()
        shutil.rmtree(crashed, ignore_errors=True)


async def test_a_message_claimed_with_its_accept_and_retried_goes_back_in_the_queue(
    open_gateway: GatewayFactory,
) -> None:
    """Its submit fails for now before the accept handed it to the scheduler (as when
    the request was cancelled meanwhile): the retry queues it all the same."""
    route = {"name": "main", "type": "loopback", "latency": 0, "transient_prefixes": ["+"]}
    gw = await _running(open_gateway, routes=[route])
    prepared = gw.intake.prepare(SendRequest(to=CANARY_NUMBER, body="hi"), None, gw.clock.time())
    inserted = gw.store.writer.insert(gw.intake.statements([prepared]))
    assert gw.scheduler.claim_with_accept(prepared.entry, gw.store.claim_group_soon)
    await asyncio.wait_for(inserted, WAIT)
    await _idle(gw)
    assert loopback(gw).health().counters["transient"] == 1
    assert _committed(gw, prepared.message.id) == ("queued", 0)
    assert gw.scheduler.depths()["queued"]["normal"] == 1
