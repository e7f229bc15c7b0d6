"""Reads that must stay cheap at millions of messages (issue 16, point 5; bench/growth.py).

The message list's filters use an index (the query plans say so), the queue's status
reads no row per waiting message (SQLite's own instruction count, which no machine's
load changes), and a start-up with a queue decrypts no number its routes do not need.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.intake import SendRequest
from gateway.models import Priority, State
from gateway.router import Router, RouteRule
from gateway.store import store as store_mod
from gateway.store.records import MessageQuery, message_list_sql
from gateway.store.transitions import Transition
from tests.conftest import CANARY_NUMBER, GatewayFactory

NOW = 1_800_000_000.0


async def _plan(gw: Gateway, q: MessageQuery) -> str:
    assert gw.store.cipher is not None
    cursor_at = NOW - 10 if q.before is not None else None  # the cursor's created_at
    sql, params = message_list_sql(q, gw.store.cipher, 51, cursor_at)
    rows = await gw.store.reader.all("EXPLAIN QUERY PLAN " + sql, params)
    return " | ".join(str(r[3]) for r in rows)


@pytest.mark.parametrize(
    ("query", "index"),
    [
        (MessageQuery(route="main"), "messages_route"),
        (MessageQuery(route="main", before="01J0000000000000000000000Z"), "messages_route"),
        (MessageQuery(receipt_overdue=True), "messages_overdue"),
        (MessageQuery(since=NOW - 86400), "messages_state"),
        (MessageQuery(since=NOW - 86400, until=NOW), "messages_state"),
        (MessageQuery(until=NOW, before="01J0000000000000000000000Z"), "messages_state"),
        (
            MessageQuery(since=NOW - 9e6, until=NOW, before="01J0000000000000000000000Z"),
            "messages_state",
        ),
        (MessageQuery(state=State.FAILED, since=NOW - 86400), "messages_state"),
        (
            MessageQuery(state=State.DELIVERED, since=NOW - 9e6, until=NOW - 8e6),
            "messages_state",
        ),
        (
            MessageQuery(state=State.SENT, until=NOW, before="01J0000000000000000000000Z"),
            "messages_state",
        ),
        (MessageQuery(route="main", until=NOW), "messages_state"),
        (MessageQuery(state=State.FAILED), "messages_state"),
        (MessageQuery(to=CANARY_NUMBER), "messages_to"),
        (MessageQuery(to=CANARY_NUMBER, state=State.FAILED), "messages_to"),
        (MessageQuery(to=CANARY_NUMBER, since=NOW - 86400, until=NOW), "messages_to"),
    ],
    ids=lambda v: str(v) if isinstance(v, str) else None,
)
async def test_each_list_filter_reads_through_an_index(
    open_gateway: GatewayFactory, query: MessageQuery, index: str
) -> None:
    gw = await open_gateway()
    plan = await _plan(gw, query)
    assert index in plan, plan
    # No walk of the table or of a whole index, but the partial one of the few overdue.
    walks = [r for r in plan.split(" | ") if r.startswith("SCAN messages")]
    assert walks in ([], ["SCAN messages USING INDEX messages_overdue"]), plan
    # A page is the first rows of the index's order, not all matches sorted.
    assert "TEMP B-TREE" not in plan or query.to is not None, plan
    if query.before is not None and query.until is not None:
        assert "(created_at,id)<(?,?)" in plan, plan  # the walk starts at the cursor


async def test_a_time_range_pages_by_creation_time_without_gaps(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    made = []
    for n in range(7):
        req = SendRequest(to=CANARY_NUMBER, body=f"m{n}")
        prepared = gw.intake.prepare(req, None, NOW + n)
        await gw.store.insert(gw.intake.statements([prepared]))
        made.append(prepared.message.id)
    seen: list[str] = []
    cursor = None
    while True:
        q = MessageQuery(since=NOW + 1, until=NOW + 6, before=cursor)
        page = await gw.store.records.messages(q, 2)
        seen += [m.id for m in page]
        if len(page) < 2:
            break
        cursor = page[-1].id
    assert seen == list(reversed(made[1:6]))


async def _vm_steps(gw: Gateway, read: Any) -> int:
    """SQLite VM instructions run by the read pool's connections during `read()`."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conns = gw.store.reader._all
    for conn in conns:
        await conn.set_progress_handler(count, 1)
    try:
        await read()
    finally:
        for conn in conns:
            await conn.set_progress_handler(None, 1)
    return steps[0]


async def _accepted(gw: Gateway, n: int, at: float) -> list[str]:
    prepared = [
        gw.intake.prepare(SendRequest(to=CANARY_NUMBER, body=f"a{i}"), None, at + i)
        for i in range(n)
    ]
    await gw.store.insert(gw.intake.statements(prepared))
    return [p.message.id for p in prepared]


async def test_a_state_in_an_old_range_reads_only_the_range(
    open_gateway: GatewayFactory,
) -> None:
    """`status=` with an old time range: the rows of that state accepted after the
    range are not walked (at 5 M messages they were millions)."""
    gw = await open_gateway()
    old = await _accepted(gw, 5, NOW - 9e6)
    await _accepted(gw, 20, NOW)
    q = MessageQuery(state=State.QUEUED, since=NOW - 9e6, until=NOW - 8e6)

    async def read() -> None:
        page = await gw.store.records.messages(q, 3)
        assert [m.id for m in page] == old[:1:-1]

    few = await _vm_steps(gw, read)
    await _accepted(gw, 1500, NOW + 100)
    many = await _vm_steps(gw, read)
    assert many < few + 200, (few, many)
    cursor = (await gw.store.records.messages(q, 3))[-1].id
    rest = await gw.store.records.messages(replace(q, before=cursor), 3)
    assert [m.id for m in rest] == old[1::-1]


async def test_a_time_range_of_every_state_reads_only_the_range(
    open_gateway: GatewayFactory,
) -> None:
    """A time range without a state merges each state's walk of `messages_state`
    (migration 41 dropped the index by creation time alone): newest first across the
    states, no gap between pages, and the rows accepted after the range are not walked."""
    gw = await open_gateway()
    old = await _accepted(gw, 6, NOW - 9e6)
    cancelled = old[1::2]
    await gw.store.transition_many([Transition(m, State.CANCELLED) for m in cancelled], NOW)
    await _accepted(gw, 20, NOW)
    q = MessageQuery(since=NOW - 9e6, until=NOW - 8e6)

    async def read() -> None:
        page = await gw.store.records.messages(q, 4)
        assert [m.id for m in page] == old[:1:-1]

    few = await _vm_steps(gw, read)
    await _accepted(gw, 1500, NOW + 100)
    many = await _vm_steps(gw, read)
    assert many < few + 200, (few, many)
    first = await gw.store.records.messages(q, 4)
    rest = await gw.store.records.messages(replace(q, before=first[-1].id), 4)
    assert [m.id for m in rest] == old[1::-1]
    assert {m.id for m in first + rest if m.state is State.CANCELLED} == set(cancelled)


async def _queue(gw: Gateway, n: int) -> None:
    prepared = [
        gw.intake.prepare(SendRequest(to=CANARY_NUMBER, body=f"q{i}"), None, gw.clock.time())
        for i in range(n)
    ]
    await gw.store.insert(gw.intake.statements(prepared))
    for p in prepared:
        gw.scheduler.add(p.entry, scheduled=p.scheduled)


async def test_queue_status_reads_no_row_per_waiting_message(
    open_gateway: GatewayFactory,
) -> None:
    gw = await open_gateway()
    await _queue(gw, 50)
    few = await _vm_steps(gw, gw.usecases.status.queue)
    await _queue(gw, 1500)
    many = await _vm_steps(gw, gw.usecases.status.queue)
    status = await gw.usecases.status.queue()
    assert sum(c.queued for c in status.classes) == 1550
    assert many < few + 200, (few, many)


async def test_a_restart_with_a_queue_decrypts_no_number_when_no_route_needs_one(
    open_gateway: GatewayFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = await open_gateway()
    await _queue(gw, 7)
    scheduled = gw.intake.prepare(
        SendRequest(
            to=CANARY_NUMBER,
            body="later",
            send_at=datetime.fromtimestamp(gw.clock.time() + 3600, UTC),
        ),
        None,
        gw.clock.time(),
    )
    await gw.store.insert(gw.intake.statements([scheduled]))
    await gw.stop()
    monkeypatch.setattr(store_mod, "LIVE_PAGE", 3)  # several pages of each state
    again = await open_gateway(start=False)
    assert again.store.cipher is not None
    opened: list[str] = []
    real = again.store.cipher.decrypt

    def decrypt(blob: bytes, row_id: str, column: str) -> str:
        opened.append(column)
        return real(blob, row_id, column)

    monkeypatch.setattr(again.store.cipher, "decrypt", decrypt)
    await again.start(dispatch=False)
    assert "to" not in opened
    depths = again.scheduler.depths()
    assert sum(depths["queued"].values()) == 7
    assert sum(depths["scheduled"].values()) == 1
    await again.scheduler.run_until_idle()
    sent = await again.store.records.messages(MessageQuery(route="main"), 20)
    assert len(sent) == 7


def test_routes_without_prefixes_share_one_candidate_tuple_per_class() -> None:
    router = Router(
        [RouteRule("a", frozenset(Priority), ()), RouteRule("b", frozenset(Priority), ())]
    )
    first = router.candidates("+12025550100", Priority.NORMAL)
    assert first == ("a", "b")
    assert router.candidates("+447700900123", Priority.NORMAL) is first
    assert router.candidates("+12025550100", Priority.NORMAL, "b") == ("b",)
    assert router.candidates("+12025550100", Priority.NORMAL, "nope") == ()
    assert not router.routes_by_number
    by_prefix = Router([RouteRule("uk", frozenset(Priority), ("+44",))])
    assert by_prefix.routes_by_number
    assert by_prefix.candidates("+12025550100", Priority.NORMAL) == ()
    assert by_prefix.candidates("+447700900123", Priority.NORMAL) == ("uk",)


async def test_the_queue_views_count_every_waiting_message_and_skip_stale_heads(
    open_gateway: GatewayFactory, clock: Any
) -> None:
    gw = await open_gateway()
    await _queue(gw, 3)
    clock.advance(10.0)
    await _queue(gw, 2)
    later = gw.intake.prepare(
        SendRequest(to=CANARY_NUMBER, body="later", send_at=datetime.fromtimestamp(NOW + 9e6, UTC)),
        None,
        gw.clock.time(),
    )
    await gw.store.insert(gw.intake.statements([later]))
    gw.scheduler.add(later.entry, scheduled=later.scheduled)
    depths = gw.scheduler.depths()
    assert sum(depths["queued"].values()) == 5 and sum(depths["scheduled"].values()) == 1
    assert gw.scheduler.depths_by_route() == {
        "queued": {"main": 5},
        "scheduled": {"main": 1},
    }
    label = Priority.NORMAL.label
    assert gw.scheduler.oldest_waiting(gw.clock.time())[label] == 10.0
    oldest = sorted(gw.scheduler._waiting.values(), key=lambda e: e.due_at)[:3]
    for e in oldest:  # cancelled: their heap items stay behind, stale
        gw.scheduler.forget(e.id)
    assert gw.scheduler.oldest_waiting(gw.clock.time())[label] == 0.0
    assert sum(gw.scheduler.depths()["queued"].values()) == 2


async def test_the_rollup_enters_the_blocked_messages_at_its_cursor(
    open_gateway: GatewayFactory,
) -> None:
    """The analytics rollup wakes every 15 s on an idle gateway: each wake must seek to
    its cursor, not walk every blocked message there is."""
    from gateway.analytics.streams import STREAMS, Cursor

    gw = await open_gateway()
    stream = next(s for s in STREAMS if s.name == "blocked")
    params = stream.params(Cursor(0, NOW, "x", 0), NOW + 60, 100)
    rows = await gw.store.reader.all("EXPLAIN QUERY PLAN " + stream.sql, params)
    plan = " | ".join(str(r[3]) for r in rows)
    assert plan.startswith("SEARCH") and ">?" in plan.split(" | ")[0], plan


@pytest.mark.timeout(180)  # a fresh interpreter's imports, on a loaded machine
def test_a_start_up_imports_no_library_of_a_feature_not_configured() -> None:
    """The directory's ldap3 and MQTT's aiomqtt load only when configured: together
    ~100 ms of every start-up's CPU (issue 16, growth: start-up < 5 s)."""
    probe = (
        "import sys, gateway.cli, gateway.app;"
        "print(sorted(m for m in ('ldap3', 'aiomqtt', 'paho') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=150
    )
    assert out.stdout.strip() == "[]", out.stdout
