"""The writer keeps recipients' consent rows between transactions (issue 12, point 9:
the accept rate with the policy's checks on) and reads them again after any change to
`consent_state`, whoever made it: the keyword flow, the API, another process, a
transaction that rolled back.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.consent import ledger
from gateway.consent.purposes import Purpose
from gateway.consent.state_cache import StateCache, epoch
from gateway.intake import SendRequest
from gateway.store.schema import migrate
from gateway.usecases import Caller
from tests.conftest import GatewayFactory, record_decision
from tests.test_accept_cost import POLICY, number, sender


def _fresh(tmp_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    migrate(conn)
    return conn


def test_every_change_to_consent_state_moves_the_epoch(tmp_path: Path) -> None:
    """Inserts, upserts, updates and deletes each leave a new value; a rolled-back
    change puts the old one back."""
    conn = _fresh(tmp_path)
    seen = [epoch(conn)]

    def changed(sql: str, *params: object) -> None:
        conn.execute(sql, params)
        seen.append(epoch(conn))
        assert seen[-1] != seen[-2], sql

    insert = "INSERT INTO consent_state VALUES (?, '*', 'all', ?, 1, 0, 'api', NULL)"
    changed(insert, b"a", "out")
    changed(insert + " ON CONFLICT DO UPDATE SET opted = excluded.opted", b"a", "in")
    changed("UPDATE consent_state SET since = 5 WHERE contact_idx = ?", b"a")
    changed("DELETE FROM consent_state WHERE contact_idx = ?", b"a")
    conn.execute("BEGIN")
    conn.execute(insert, (b"b", "out"))
    assert epoch(conn) != seen[-1]
    conn.execute("ROLLBACK")
    assert epoch(conn) == seen[-1]


def test_kept_rows_answer_until_a_change_and_a_new_connection_reads_again(
    tmp_path: Path,
) -> None:
    conn = _fresh(tmp_path)
    conn.execute(
        "INSERT INTO consent_state VALUES (?, '*', 'all', 'out', 1, 0, 'api', NULL)", (b"a",)
    )
    reads: list[str] = []
    conn.set_trace_callback(lambda sql: reads.append(sql) if "FROM consent_state" in sql else None)
    cache = StateCache()
    first = cache.rows(conn, [b"a", b"b"])
    assert [r[3] for r in first[b"a"]] == ["out"] and not first[b"b"]
    assert len(reads) == 1
    assert [r[3] for r in cache.rows(conn, [b"b", b"a"])[b"a"]] == ["out"]
    assert len(reads) == 1  # both kept, the one with no rows too
    conn.execute("UPDATE consent_state SET opted = 'in' WHERE contact_idx = ?", (b"a",))
    assert [r[3] for r in cache.rows(conn, [b"a"])[b"a"]] == ["in"]
    assert len(reads) == 2
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.set_trace_callback(lambda sql: reads.append(sql) if "FROM consent_state" in sql else None)
    cache.rows(other, [b"a"])
    assert len(reads) == 3  # what was read on another connection is not trusted


def test_rows_handed_out_stay_as_their_transaction_read_them(tmp_path: Path) -> None:
    """The kept rows are handed out without a copy: a change starts a new mapping, and
    the one an earlier group holds still says what its transaction read."""
    conn = _fresh(tmp_path)
    conn.execute(
        "INSERT INTO consent_state VALUES (?, '*', 'all', 'out', 1, 0, 'api', NULL)", (b"a",)
    )
    cache = StateCache()
    before = cache.rows(conn, [b"a"])
    conn.execute("UPDATE consent_state SET opted = 'in' WHERE contact_idx = ?", (b"a",))
    after = cache.rows(conn, [b"a", b"b"])
    assert [r[3] for r in before[b"a"]] == ["out"] and b"b" not in before
    assert [r[3] for r in after[b"a"]] == ["in"] and not after[b"b"]


async def test_a_group_of_sends_to_known_recipients_reads_no_consent_rows(
    tmp_path: Path, clock: FakeClock, open_gateway: GatewayFactory
) -> None:
    """The second round of single sends to the same numbers: the epoch's read, the
    counted sends' read and the inserts; no read of `consent_state`."""
    gw = await open_gateway(consent={"enabled": True, **POLICY})
    who = await sender(gw)
    batch = [SendRequest(to=number(i), body="x", purpose="appointment") for i in range(8)]
    for i in range(2):
        await record_decision(gw, number(i), "opt_out", "all")
    first = await gw.usecases.messages.accept_batch(who, batch)
    seen: list[str] = []
    writer = gw.store.writer
    await writer.call_outside_transaction(lambda conn: conn.set_trace_callback(seen.append))
    try:
        answers = await asyncio.gather(*(gw.usecases.messages.accept(who, r) for r in batch))
    finally:
        await writer.call_outside_transaction(lambda conn: conn.set_trace_callback(None))
    assert [a.status for a in first.results] == ["blocked"] * 2 + ["queued"] * 6
    assert [(a.status, a.reason) for a in answers] == [("blocked", "opted_out")] * 2 + [
        ("scheduled", "frequency_cap")
    ] * 6
    assert not [s for s in seen if "FROM consent_state" in s], seen
    assert any("FROM consent_epoch" in s for s in seen), seen


def _forget_elsewhere(path: Path, contact_idx: bytes) -> None:
    """What another process's write to the store does: the number's rows gone."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("PRAGMA busy_timeout = 10000")
        other.execute("DELETE FROM consent_state WHERE contact_idx = ?", (contact_idx,))
    finally:
        other.close()


def _request(i: int) -> SendRequest:
    return SendRequest(to=number(i), body="x", purpose="informational")  # no cap


async def _send(gw: Gateway, who: Caller, i: int) -> tuple[str, str | None]:
    a = await gw.usecases.messages.accept(who, _request(i))
    return a.status, a.reason


async def test_a_decision_after_the_rows_were_kept_decides_the_next_send(
    open_gateway: GatewayFactory,
) -> None:
    """Each decision, through the ledger in the writer or through SQL on another
    connection (an import in another process), is obeyed by the very next send."""
    gw = await open_gateway(consent={"enabled": True, **POLICY})
    who = await sender(gw)
    assert await _send(gw, who, 1) == ("queued", None)
    await record_decision(gw, number(1), "opt_out", "all", source="keyword")
    assert await _send(gw, who, 1) == ("blocked", "opted_out")
    await record_decision(gw, number(1), "opt_in", "all")
    assert await _send(gw, who, 1) == ("queued", None)
    await record_decision(gw, number(1), "opt_out", "all", source="keyword")
    assert await _send(gw, who, 1) == ("blocked", "opted_out")
    path, key = gw.store.path, gw.store.blind_index(number(1))
    await asyncio.to_thread(_forget_elsewhere, path, key)
    assert await _send(gw, who, 1) == ("queued", None)


async def test_rows_read_in_a_transaction_that_rolled_back_are_not_trusted(
    open_gateway: GatewayFactory,
) -> None:
    """A writer job opts a number out and sends to it (blocked, and the rows kept),
    then fails: its savepoint rolls back, the opt-out never happened. After another,
    unrelated decision is committed, the next send goes (an epoch counted up rather
    than random would be back at the value the rolled-back rows were kept under)."""
    gw = await open_gateway(consent={"enabled": True, **POLICY})
    who = await sender(gw)
    assert await _send(gw, who, 1) == ("queued", None)
    store = gw.store
    assert store.cipher is not None
    cipher = store.cipher
    out = ledger.Entry(
        store.blind_index(number(1)), number(1), "opt_out", "all", "*", "keyword", gw.clock.time()
    )
    inside: list[str] = []

    def job(conn: sqlite3.Connection) -> None:
        ledger.append(conn, cipher, out)
        p = gw.usecases.messages.accept_within(conn, who, _request(1))
        inside.append(p.answer().status)
        raise RuntimeError("the job fails after its send was judged")

    with pytest.raises(RuntimeError):
        await store.writer.run(job)
    assert inside == ["blocked"]
    await record_decision(gw, number(2), "opt_out", "all")
    assert await _send(gw, who, 1) == ("queued", None)
    assert await _send(gw, who, 2) == ("blocked", "opted_out")


def _view_elsewhere(gw: Gateway, contact_idx: bytes) -> list[str]:
    """What a campaign's preview does: a view on a connection of its own, on a thread
    other than the writer's; the opt-outs it finds there."""
    other = sqlite3.connect(gw.store.path, isolation_level=None)
    try:
        other.execute("BEGIN")
        view = gw.intake.policy.view(other, [(contact_idx, Purpose.INFORMATIONAL)], 0.0)
        return [r[3] for r in view.state.get(contact_idx, ())]
    finally:
        other.close()


async def test_a_view_on_another_connection_neither_uses_nor_drops_the_writers_rows(
    open_gateway: GatewayFactory,
) -> None:
    """A view built on a reader's connection (campaign preview) reads that connection's
    consent rows and leaves the writer's kept rows alone: the writer's next send to the
    same number reads no consent rows again."""
    gw = await open_gateway(consent={"enabled": True, **POLICY})
    who = await sender(gw)
    await record_decision(gw, number(1), "opt_out", "all")
    assert await _send(gw, who, 1) == ("blocked", "opted_out")  # the writer keeps its rows
    key = gw.store.blind_index(number(1))
    assert await asyncio.to_thread(_view_elsewhere, gw, key) == ["out"]
    seen: list[str] = []
    writer = gw.store.writer
    await writer.call_outside_transaction(lambda conn: conn.set_trace_callback(seen.append))
    try:
        assert await _send(gw, who, 1) == ("blocked", "opted_out")
    finally:
        await writer.call_outside_transaction(lambda conn: conn.set_trace_callback(None))
    assert not [s for s in seen if "FROM consent_state" in s], seen


_COUNTED_READ = "FROM messages WHERE to_index IN"


async def _traced_sends(
    gw: Gateway, who: Caller, requests: list[SendRequest]
) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Single sends at once (one writer group), and the SQL the writer ran for them."""
    seen: list[str] = []
    writer = gw.store.writer
    await writer.call_outside_transaction(lambda conn: conn.set_trace_callback(seen.append))
    try:
        answers = await asyncio.gather(*(gw.usecases.messages.accept(who, r) for r in requests))
    finally:
        await writer.call_outside_transaction(lambda conn: conn.set_trace_callback(None))
    return [(a.status, a.reason) for a in answers], seen


async def _send_each(
    gw: Gateway, who: Caller, requests: list[SendRequest]
) -> list[tuple[str, str | None]]:
    found = []
    for r in requests:
        a = await gw.usecases.messages.accept(who, r)
        found.append((a.status, a.reason))
    return found


@pytest.mark.parametrize("elsewhere", [False, True], ids=["writer", "another-connection"])
async def test_a_recipient_back_after_an_opt_out_still_has_its_cap_counted(
    open_gateway: GatewayFactory, elsewhere: bool
) -> None:
    """A clinical send goes; the number opts out (its send blocked, the opt-out kept by
    the writer); it opts back in, through the writer or on another connection. Its
    next clinical send is judged on fresh rows, with its earlier send counted: the
    day's cap holds it (a view that trusted the kept "out" rows to skip the counted
    sends would let it go)."""
    gw = await open_gateway(consent={"enabled": True, **POLICY})
    who = await sender(gw)
    appointment = SendRequest(to=number(1), body="x", purpose="appointment")
    assert await _send_each(gw, who, [appointment]) == [("queued", None)]
    await record_decision(gw, number(1), "opt_out", "all")
    assert await _send_each(gw, who, [appointment]) == [("blocked", "opted_out")]
    if elsewhere:
        key = gw.store.blind_index(number(1))
        await asyncio.to_thread(_forget_elsewhere, gw.store.path, key)
    else:
        await record_decision(gw, number(1), "opt_in", "all")
    outcomes, seen = await _traced_sends(gw, who, [appointment])
    assert outcomes == [("scheduled", "frequency_cap")]
    assert len([s for s in seen if _COUNTED_READ in s]) == 1, seen
