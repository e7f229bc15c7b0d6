"""Issue 12 point 6 (MSG-3): frequency caps per recipient and purpose over rolling
windows, counted from the store; deferred or blocked per policy; atomic under parallel
requests (the count and the insert are one writer transaction)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.clock import FakeClock
from gateway.consent.policy import _cap_room, _fits, limits_of
from gateway.consent.purposes import Cap
from gateway.integrations.events import MESSAGE_STATUS
from gateway.tokens import create_token
from tests.conftest import CANARY_NUMBER, GatewayFactory, record_decision
from tests.store_rows import message_row
from tests.test_api import start_client
from tests.test_consent_policy import caller, send
from tests.test_outbox import TakesAll, outbox_rows

DAY = 86400.0
# Caps only: every purpose at any hour, so the caps alone decide here.
CAPS: dict[str, Any] = {
    "purposes": {
        "appointment": {"window": ""},
        "results": {"window": ""},
        "informational": {"window": "", "caps": ["2/1h"]},
        "marketing": {"window": ""},
    }
}


async def _send_at(gw: Any, who: Any, message_id: str) -> float | None:
    return (await gw.usecases.messages.get(who, message_id)).send_at


async def test_clinical_caps_defer_to_the_instant_the_rolling_windows_have_room(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    """1 a day and 3 a week: the 2nd goes a day after the 1st, the 3rd two days after,
    the 4th a week after the 1st (when it leaves the 7-day window)."""
    gw = await open_gateway(consent=CAPS)
    who = await caller(gw, "send", "read")
    t0 = clock.time()
    answers = [await send(gw, who, purpose="appointment", body=f"m{i}") for i in range(4)]
    assert [(a.status, a.reason) for a in answers] == [
        ("queued", None),
        ("scheduled", "frequency_cap"),
        ("scheduled", "frequency_cap"),
        ("scheduled", "frequency_cap"),
    ]
    times = [await _send_at(gw, who, a.id) for a in answers[1:]]
    assert times == [t0 + DAY, t0 + 2 * DAY, t0 + 7 * DAY]


async def test_at_the_window_edge_one_instant_early_waits_and_on_the_edge_goes(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=CAPS)
    who = await caller(gw, "send", "read")
    first = await send(gw, who, purpose="appointment")
    t0 = clock.time()
    clock.advance(DAY - 0.001)
    early = await send(gw, who, purpose="appointment", to="+12025550123")
    assert early.status == "queued"  # another recipient: its own cap
    early = await send(gw, who, purpose="appointment")
    assert (early.status, await _send_at(gw, who, early.id)) == ("scheduled", t0 + DAY)
    await gw.usecases.messages.cancel(who, early.id)  # cancelled: no longer counted
    clock.advance(0.001)
    on_edge = await send(gw, who, purpose="appointment")
    assert on_edge.status == "queued"
    assert first.status == "queued"


async def test_every_clinical_purpose_shares_one_cap_and_other_purposes_have_their_own(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(consent=CAPS)
    who = await caller(gw, "send")
    assert (await send(gw, who, purpose="appointment")).status == "queued"
    assert (await send(gw, who, purpose="results")).reason == "frequency_cap"
    two_an_hour = [await send(gw, who, purpose="informational") for _ in range(3)]
    assert [a.status for a in two_an_hour] == ["queued", "queued", "scheduled"]


async def test_marketing_over_its_cap_is_blocked_and_blocked_ones_do_not_count(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway(consent=CAPS)
    who = await caller(gw, "send")
    no_consent = await send(gw, who, purpose="marketing")
    assert (no_consent.status, no_consent.reason) == ("blocked", "no_consent")
    await record_decision(gw, CANARY_NUMBER, "opt_in", "purpose:marketing", disclosure="YES")
    assert (await send(gw, who, purpose="marketing")).status == "queued"
    over = await send(gw, who, purpose="marketing")
    assert (over.status, over.reason) == ("blocked", "frequency_cap")


async def test_a_deferral_past_the_messages_expiry_blocks_it(
    open_gateway: GatewayFactory, clock: FakeClock
) -> None:
    gw = await open_gateway(consent=CAPS)
    who = await caller(gw, "send")
    await send(gw, who, purpose="appointment")
    soon = datetime.fromtimestamp(clock.time(), UTC) + timedelta(hours=2)
    late = await send(gw, who, purpose="appointment", expires_at=soon)
    assert (late.status, late.reason) == ("blocked", "frequency_cap")


async def test_parallel_requests_cannot_race_past_a_cap(open_gateway: GatewayFactory) -> None:
    """40 sends over HTTP at once, marketing capped at 1 a day: one goes, 39 blocked."""
    gw = await open_gateway(consent=CAPS)
    await record_decision(gw, CANARY_NUMBER, "opt_in", "purpose:marketing", disclosure="YES")
    token = await create_token(gw.store, "api", frozenset({"send"}), gw.clock)
    headers = {"Authorization": f"Bearer {token.text}"}
    client = await start_client(gw)
    body = json.dumps({"to": CANARY_NUMBER, "body": "offer", "purpose": "marketing"})
    try:
        responses = await asyncio.gather(
            *(client.post("/api/v1/messages", data=body, headers=headers) for _ in range(40))
        )
        answers = [await r.json() for r in responses]
    finally:
        await client.close()
    assert {r.status for r in responses} == {202}
    statuses = sorted((a["status"], a.get("reason")) for a in answers)
    assert statuses == [("blocked", "frequency_cap")] * 39 + [("queued", None)]
    cur = await gw.store.reader.execute(
        "SELECT state, count(*) FROM messages GROUP BY state ORDER BY state"
    )
    assert [tuple(r) for r in await cur.fetchall()] == [("blocked", 39), ("queued", 1)]


async def test_a_hold_or_block_at_accept_is_the_message_row_and_its_status_event(
    open_gateway: GatewayFactory,
) -> None:
    """The accept the policy holds or blocks writes its reason with the message row and
    no row of history besides (a queued one's creation is implied by its row too): the
    history still opens with the hold or the block and its reason, and the
    `message.status` event is still written for webhooks."""
    gw = await open_gateway(consent=CAPS, start=False)
    gw.outbox.register(TakesAll())
    await gw.start(dispatch=False)
    who = await caller(gw, "send", "read")
    await send(gw, who, purpose="appointment")
    held = await send(gw, who, purpose="appointment")
    blocked = await send(gw, who, purpose="marketing")  # no written consent
    assert (held.status, held.reason) == ("scheduled", "frequency_cap")
    assert (blocked.status, blocked.reason) == ("blocked", "no_consent")
    assert await gw.store.reader.all("SELECT * FROM message_events") == []
    for answer in (held, blocked):
        record = await gw.usecases.messages.get(who, answer.id)
        history = [(e.state, e.error_code, e.attempt) for e in record.events or ()]
        assert history == [(answer.status, answer.reason, 0)]
    status = [(r.message_id, r.state, r.code) for r in await outbox_rows(gw, MESSAGE_STATUS)]
    assert status == [
        (held.id, "scheduled", "frequency_cap"),
        (blocked.id, "blocked", "no_consent"),
    ]


async def test_a_hold_stored_with_its_own_event_row_reads_once(
    open_gateway: GatewayFactory,
) -> None:
    """Messages held before the reason moved onto the row have an event row for it and
    no reason on the row: their history shows the hold once."""
    gw = await open_gateway(consent=CAPS)
    who = await caller(gw, "send", "read")
    await send(gw, who, purpose="appointment")
    held = await send(gw, who, purpose="appointment")
    row = await message_row(gw.store, held.id)
    assert row is not None

    def as_before(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE messages SET held_for = NULL WHERE id = ?", (held.id,))
        conn.execute(
            "INSERT INTO message_events (message_id, at, state, route, carrier_id, error_code,"
            " attempt) VALUES (?, ?, 'scheduled', NULL, NULL, 'frequency_cap', 0)",
            (held.id, row["created_at"]),
        )

    await gw.store.writer.run(as_before)
    record = await gw.usecases.messages.get(who, held.id)
    history = [(e.state, e.error_code, e.attempt) for e in record.events or ()]
    assert history == [("scheduled", "frequency_cap", 0)]


def _fits_by_definition(times: list[float], cap: Cap, x: float) -> bool:
    """A message at x keeps cap n/W unless some span [s, s + W) that holds x holds n
    others: every start s in (x - W, x] is tried."""
    starts = [t for t in times if x - cap.seconds < t <= x] + [x]
    return all(sum(1 for t in times if s <= t < s + cap.seconds) < cap.count for s in starts)


@settings(max_examples=3000)
@given(
    st.lists(st.integers(0, 40), max_size=8),
    st.integers(1, 4),
    st.integers(1, 12),
    st.integers(0, 40),
)
def test_the_cap_check_agrees_with_its_definition(
    times: list[int], count: int, width: int, x: int
) -> None:
    """The check looks only at the runs of n around x's place; on a small integer grid
    (ties and window edges everywhere) it agrees with trying every span."""
    ordered = sorted(float(t) for t in times)
    cap = Cap(count, float(width))
    assert _fits(ordered, cap, float(x)) == _fits_by_definition(ordered, cap, float(x))


@settings(max_examples=3000)
@given(
    st.lists(st.integers(0, 60), max_size=10),
    st.lists(st.tuples(st.integers(1, 4), st.integers(1, 15)), min_size=1, max_size=3),
    st.integers(0, 60),
)
def test_the_cap_search_finds_the_first_instant_every_cap_has_room(
    times: list[int], caps: list[tuple[int, int]], at: int
) -> None:
    """The search jumps past the runs x breaks; it must land where trying every
    candidate (x, or some other's t + W after it) in order and checking each against
    the definition lands."""
    ordered = sorted(float(t) for t in times)
    rules = [Cap(n, float(w)) for n, w in caps]
    candidates = sorted({float(at), *(t + c.seconds for t in ordered for c in rules)})
    expected = next(
        x for x in candidates if x >= at and all(_fits_by_definition(ordered, c, x) for c in rules)
    )
    assert _cap_room(ordered, limits_of(rules), float(at)) == expected


@pytest.mark.parametrize("at", [0.0, 5.0, 10.0, 95.0, 300.0, 310.0])
def test_the_cap_search_walks_a_long_stack_of_held_sends_to_the_first_room(at: float) -> None:
    """Held clinical sends stack a day apart, three a week, ever further ahead: the
    search over such a stack (1/10 and 3/70 here) lands where trying every candidate
    does, also when x starts inside the stack, in a gap of it, or past it."""
    ordered = sorted([10.0 * k for k in range(30) if k % 7 < 3] + [103.0, 104.0])
    rules = [Cap(1, 10.0), Cap(3, 70.0)]
    candidates = sorted({at, *(t + c.seconds for t in ordered for c in rules)})
    expected = next(
        x for x in candidates if x >= at and all(_fits_by_definition(ordered, c, x) for c in rules)
    )
    assert _cap_room(ordered, limits_of(rules), at) == expected
