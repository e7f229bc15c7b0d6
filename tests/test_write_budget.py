"""The write budget (issue 16, point 3): what a delivered message costs the disk.

A submit's `sent` and a receipt are lazy writes: they join the next transaction other
work starts instead of paying a commit (whole pages of every b-tree touched, and an
fsync) of their own. New stores use smaller pages. Both keep the guarantees: `sending`
is committed before the driver sees a message, and a lazy write is committed before
its caller (the scheduler, the carrier's answer to a receipt) hears back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from drivers.clock import FakeClock
from drivers.smpp.simulator import SimulatorConfig, SmscSimulator
from gateway.config import ConfigError, from_mapping
from gateway.inbound_doubt import KEEP_SECONDS, Marked, Settle, StoredOnce
from gateway.models import Priority, State, new_message_id
from gateway.store import transitions
from gateway.store import writer as writer_mod
from gateway.store.schema import MIGRATIONS, _statements, migrate
from gateway.store.store import NewMessage, Store
from gateway.store.transitions import Transition
from gateway.store.writer import GroupCommitWriter
from tests.conftest import CANARY_BODY, CANARY_DIGITS, CANARY_NUMBER, GatewayFactory, accept
from tests.store_rows import message_row
from tests.test_cli import _init
from tests.test_config import EXAMPLE
from tests.test_inbound_reassembly import _add_smpp_route, _daemon

WAIT = 10.0  # seconds any one step may take before the test fails


def _insert(conn: sqlite3.Connection, items: list[str]) -> list[None]:
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in items])
    return [None] * len(items)


async def _writer(tmp_path: Path, lazy_delay: float) -> GroupCommitWriter:
    w = GroupCommitWriter(tmp_path / "w.db", lazy_delay=lazy_delay)
    await w.open()
    await w.call_outside_transaction(lambda c: c.execute("CREATE TABLE t (v TEXT)"))
    return w


async def _rows(w: GroupCommitWriter) -> list[str]:
    return await w.call_outside_transaction(
        lambda c: [r[0] for r in c.execute("SELECT v FROM t ORDER BY v")]
    )


async def test_lazy_work_rides_in_the_next_transaction_other_work_starts(
    tmp_path: Path,
) -> None:
    w = await _writer(tmp_path, lazy_delay=3600.0)  # its own timer never fires here
    try:
        before = w.batches
        lazy = [w.run_grouped(_insert, f"lazy{i}", lazy=True) for i in range(3)]
        await asyncio.sleep(0)  # the loop turns: lazy work alone starts no transaction
        assert w.batches == before and not any(f.done() for f in lazy)
        eager = w.run(lambda c: c.execute("INSERT INTO t VALUES ('eager')"))
        await asyncio.wait_for(asyncio.gather(eager, *lazy), WAIT)
        assert w.batches == before + 1  # one transaction, one fsync, for all four
        assert await _rows(w) == ["eager", "lazy0", "lazy1", "lazy2"]
    finally:
        await w.close()


async def test_a_lazy_job_rides_like_a_lazy_group_item(tmp_path: Path) -> None:
    """`run(..., lazy=True)`: for a group's outcomes written as one job."""
    w = await _writer(tmp_path, lazy_delay=3600.0)
    try:
        before = w.batches
        lazy = w.run(lambda c: c.execute("INSERT INTO t VALUES ('job')"), lazy=True)
        await asyncio.sleep(0)
        assert w.batches == before and not lazy.done()
        await asyncio.wait_for(w.run_grouped(_insert, "eager"), WAIT)
        await asyncio.wait_for(lazy, WAIT)
        assert w.batches == before + 1
        assert await _rows(w) == ["eager", "job"]
    finally:
        await w.close()


async def test_lazy_work_alone_commits_after_its_delay(tmp_path: Path) -> None:
    w = await _writer(tmp_path, lazy_delay=0.05)
    try:
        before = w.batches
        await asyncio.wait_for(w.run_grouped(_insert, "alone", lazy=True), WAIT)
        assert w.batches == before + 1
        assert await _rows(w) == ["alone"]
    finally:
        await w.close()


async def test_lazy_work_waiting_behind_a_transaction_in_flight_commits(
    tmp_path: Path,
) -> None:
    """Lazy work handed in while a transaction is being written is not stranded when
    that transaction settles: it goes with the next one, or after its delay."""
    w = await _writer(tmp_path, lazy_delay=0.05)
    try:
        first = w.run(lambda c: c.execute("INSERT INTO t VALUES ('first')"))
        await asyncio.sleep(0)  # the first transaction is on the writer thread now
        lazy = w.run_grouped(_insert, "behind", lazy=True)
        await asyncio.wait_for(asyncio.gather(first, lazy), WAIT)
        assert await _rows(w) == ["behind", "first"]
    finally:
        await w.close()


async def test_drain_and_close_commit_lazy_work_at_once(tmp_path: Path) -> None:
    w = await _writer(tmp_path, lazy_delay=3600.0)
    lazy = w.run_grouped(_insert, "kept", lazy=True)
    await asyncio.wait_for(w.drain(), WAIT)
    assert lazy.done() and lazy.result() is None
    late = w.run_grouped(_insert, "late", lazy=True)
    await asyncio.wait_for(w.close(), WAIT)
    assert late.done() and late.result() is None
    conn = sqlite3.connect(tmp_path / "w.db")
    assert sorted(r[0] for r in conn.execute("SELECT v FROM t")) == ["kept", "late"]
    conn.close()


async def test_a_failing_lazy_item_fails_alone(tmp_path: Path) -> None:
    w = await _writer(tmp_path, lazy_delay=3600.0)
    try:
        await w.call_outside_transaction(lambda c: c.execute("CREATE UNIQUE INDEX t_v ON t (v)"))
        await w.run(lambda c: c.execute("INSERT INTO t VALUES ('taken')"))
        bad = w.run_grouped(_insert, "taken", lazy=True)
        good = w.run_grouped(_insert, "free", lazy=True)
        eager = w.run(lambda c: c.execute("INSERT INTO t VALUES ('eager')"))
        done = await asyncio.wait_for(
            asyncio.gather(bad, good, eager, return_exceptions=True), WAIT
        )
        assert isinstance(done[0], sqlite3.IntegrityError)
        assert done[1] is None and not isinstance(done[2], BaseException)
        assert await _rows(w) == ["eager", "free", "taken"]
    finally:
        await w.close()


async def test_sent_is_lazy_and_rides_with_the_next_claim(
    open_gateway: GatewayFactory,
) -> None:
    """At a trickle, one message's `sent` and another's claim share one commit; the
    sender hears back only after it. The claim is never lazy (`sending` is committed
    before the driver sees the message)."""
    gw = await open_gateway()
    w = gw.store.writer
    w.lazy_delay = 3600.0  # nothing commits lazy work here but the claim
    first, second, third = [await accept(gw) for _ in range(3)]
    now = gw.clock.time()
    for mid in (first, second):
        assert await gw.store.claim(mid, "demo", now) is not None
    sent = asyncio.ensure_future(gw.store.mark_sent(first, "demo", ["r1"], now))
    await asyncio.wait_for(w.drain(), WAIT)  # r1 is recorded, so its receipt applies
    assert sent.done()
    receipt = asyncio.ensure_future(gw.store.apply_receipt("demo", "r1", "delivered", None, now))
    await asyncio.sleep(0)
    await asyncio.wait_for(w.drain(), WAIT)
    assert await asyncio.wait_for(receipt, WAIT) == (first, State.DELIVERED)
    sent2 = asyncio.ensure_future(gw.store.mark_sent(second, "demo", ["r2"], now))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    before = w.batches
    assert not sent2.done()
    claimed = await asyncio.wait_for(gw.store.claim(third, "demo", now), WAIT)
    assert claimed is not None
    assert await asyncio.wait_for(sent2, WAIT) == State.SENT
    assert w.batches == before + 1
    assert (await message_row(gw.store, third))["state"] == "sending"
    assert [e.state for e in await gw.store.events(first)][-3:] == [
        "sending",
        "sent",
        "delivered",
    ]


async def test_receipts_are_lazy_and_ride_the_next_commit(open_gateway: GatewayFactory) -> None:
    """A receipt (alone, or a group read together) starts no transaction: it waits,
    unanswered, for the next commit other work starts (here an accept), and its caller
    (who then answers the carrier) hears back only after that commit."""
    gw = await open_gateway()
    w = gw.store.writer
    w.lazy_delay = 3600.0  # nothing commits lazy work here but the accept
    first, second = [await accept(gw) for _ in range(2)]
    now = gw.clock.time()
    sent: list[asyncio.Future[State]] = []
    for mid, cid in ((first, "q1"), (second, "q2")):
        assert await gw.store.claim(mid, "demo", now) is not None
        sent.append(asyncio.ensure_future(gw.store.mark_sent(mid, "demo", [cid], now)))
    await asyncio.sleep(0)
    await asyncio.wait_for(w.drain(), WAIT)
    assert all(f.done() for f in sent)
    one = asyncio.ensure_future(gw.store.apply_receipt("demo", "q1", "delivered", None, now))
    group = asyncio.ensure_future(
        gw.store.apply_receipts("demo", [("q2", "delivered", None, ())], now)
    )
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    before = w.batches
    assert not one.done() and not group.done()
    assert (await message_row(gw.store, first))["state"] == "sent"  # not committed yet
    await asyncio.wait_for(accept(gw), WAIT)
    assert await asyncio.wait_for(one, WAIT) == (first, State.DELIVERED)
    assert await asyncio.wait_for(group, WAIT) == [(second, State.DELIVERED)]
    assert w.batches == before + 1  # the accept's commit carried both receipts
    for mid in (first, second):
        assert (await message_row(gw.store, mid))["state"] == "delivered"


async def test_a_claim_is_never_lazy(open_gateway: GatewayFactory) -> None:
    """With lazy work held as long as it likes, a claim still commits at once."""
    gw = await open_gateway()
    gw.store.writer.lazy_delay = 3600.0
    mid = await accept(gw)
    claimed = await asyncio.wait_for(gw.store.claim(mid, "demo", gw.clock.time()), WAIT)
    assert claimed is not None
    conn = sqlite3.connect(f"file:{gw.store.path}?mode=ro", uri=True)
    try:  # another connection sees it: committed, not merely done in the writer
        row = conn.execute("SELECT state FROM messages WHERE id = ?", (mid,)).fetchone()
    finally:
        conn.close()
    assert row == ("sending",)


async def test_a_new_store_uses_the_smaller_page(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db", os.urandom(32))
    await store.open()
    await store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    try:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == writer_mod.PAGE_SIZE == 2048
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental, as before
    finally:
        conn.close()


async def test_the_writer_checkpoints_often_only_while_work_waits_behind_it(
    tmp_path: Path,
) -> None:
    """Larger checkpoints write less but stall the writer's commits longer (the accept
    p99 under load): every 1,000 frames while eager work piles up behind the commits,
    every 4,000 once a few commits in a row found nothing waiting (a trickle, a paced
    route)."""
    w = GroupCommitWriter(tmp_path / "w.db")
    await w.open()

    async def every() -> int:
        return int(
            await w.call_outside_transaction(
                lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            )
        )

    async def alone(times: int) -> None:
        for v in range(times):
            await w.insert([("INSERT INTO t VALUES (?)", (v,))])

    try:
        await w.run(lambda c: c.execute("CREATE TABLE t (v)"))
        # A commit sets what the ones before it found: with the CREATE's, these make
        # QUIET_AFTER_COMMITS that found nothing waiting, and the next one is quiet.
        await alone(writer_mod.QUIET_AFTER_COMMITS - 1)
        assert await every() == writer_mod.WAL_AUTOCHECKPOINT == 1000
        await alone(1)
        assert await every() == writer_mod.WAL_AUTOCHECKPOINT_QUIET == 4000
        first = w.insert([("INSERT INTO t VALUES (?)", (2,))])
        await asyncio.sleep(0)  # its transaction is in flight ...
        behind = w.insert([("INSERT INTO t VALUES (?)", (3,))])  # ... and this waits behind it
        await asyncio.gather(first, behind)
        assert await every() == 1000
        # Work that found nothing behind it now and then (load at a few clients) keeps
        # the short checkpoints: no PRAGMA per flip.
        await alone(writer_mod.QUIET_AFTER_COMMITS - 1)
        assert await every() == 1000
        await alone(1)
        assert await every() == 4000
    finally:
        await w.close()


async def test_an_existing_store_keeps_its_page_size(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE old (v)")
    conn.close()
    store = Store(path, os.urandom(32))
    await store.open()
    await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == 4096
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def _wal_pages(path: Path) -> list[int]:
    """The page numbers of the frames in `path`'s WAL (each frame is one whole page)."""
    data = Path(f"{path}-wal").read_bytes()
    if len(data) < 32:
        return []
    page_size = struct.unpack(">I", data[8:12])[0]
    pages, offset = [], 32
    while offset + 24 + page_size <= len(data):
        if data[offset + 8 : offset + 16] != data[16:24]:  # salts: a frame of this WAL
            break
        pages.append(struct.unpack(">I", data[offset : offset + 4])[0])
        offset += 24 + page_size
    return pages


async def _btrees_written(store: Store, step: Awaitable[object]) -> set[str]:
    """The tables and indexes whose pages the commit(s) of `step` wrote."""
    checkpoint = "PRAGMA wal_checkpoint(TRUNCATE)"
    await store.writer.call_outside_transaction(lambda c: c.execute(checkpoint).fetchall())
    await step
    await store.writer.drain()
    pages = set(_wal_pages(store.path))
    rows = await store.writer.call_outside_transaction(
        lambda c: c.execute("SELECT name, pageno FROM dbstat").fetchall()
    )
    return {name for name, page in rows if page in pages}


async def test_sent_and_receipts_leave_an_index_on_the_route_alone(
    open_gateway: GatewayFactory,
) -> None:
    """The claim writes the message's route; its `sent` and its receipt record the
    route in their events without writing it to the row again, which would rewrite
    the message's entry in every index on `route` (one whole page per commit)."""
    gw = await open_gateway()
    store = gw.store
    await store.writer.call_outside_transaction(
        lambda c: c.execute("CREATE INDEX test_by_route ON messages (route, id)")
    )
    mid = await accept(gw)
    now = gw.clock.time()
    claimed = await _btrees_written(store, store.claim(mid, "demo", now))
    assert "test_by_route" in claimed  # the claim does write it: route NULL -> demo
    sent = await _btrees_written(store, store.mark_sent(mid, "demo", ["k1"], now))
    assert "messages" in sent and "test_by_route" not in sent
    receipt = await _btrees_written(
        store, store.apply_receipt("demo", "k1", "delivered", None, now)
    )
    assert "messages" in receipt and "test_by_route" not in receipt
    row = await message_row(store, mid)
    assert (row["state"], row["route"]) == ("delivered", "demo")
    assert [(e.state, e.route) for e in await store.events(mid)][-2:] == [
        ("sent", "demo"),
        ("delivered", "demo"),
    ]


def test_lazy_commit_ms_is_documented_and_checked() -> None:
    assert "lazy_commit_ms =" in EXAMPLE.read_text()
    assert from_mapping({"store": {"lazy_commit_ms": 0}}).store.lazy_commit_ms == 0
    assert from_mapping({}).store.lazy_commit_ms == 200
    for bad in (-1, 5001, "soon"):
        with pytest.raises(ConfigError, match=r"store\.lazy_commit_ms"):
            from_mapping({"store": {"lazy_commit_ms": bad}})


async def test_lazy_commit_ms_reaches_the_writer(open_gateway: GatewayFactory) -> None:
    """`[store] lazy_commit_ms = 0`: a receipt commits at once, on its own."""
    gw = await open_gateway(store={"lazy_commit_ms": 0})
    assert gw.store.writer.lazy_delay == 0
    mid = await accept(gw)
    now = gw.clock.time()
    assert await gw.store.claim(mid, "demo", now) is not None
    await asyncio.wait_for(gw.store.mark_sent(mid, "demo", ["z1"], now), WAIT)
    assert (await message_row(gw.store, mid))["state"] == "sent"


async def test_a_receipt_is_answered_only_after_its_commit_even_across_kill_9(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real `smsgw run` bound to the SMSC simulator, with lazy work held 5 s: a
    receipt's deliver_sm waits unanswered for the lazy commit. Killed with SIGKILL
    meanwhile, the gateway neither stored nor acknowledged it; the simulator sends it
    again to the next `smsgw run`, which applies it once (the message is not resent)."""
    clock = FakeClock()  # the simulator's receipt leaves when the test advances it
    sim_config = SimulatorConfig(password="pw", receipt_delay=1.0, redelivery_delay=0.0)
    async with SmscSimulator(sim_config, clock) as sim:
        conf, token = await asyncio.to_thread(_init, tmp_path, capsys)
        url = await asyncio.to_thread(_add_smpp_route, conf, sim.port)
        plain = conf.read_text() + '\n[log]\nlevel = "debug"\n'
        held = plain.replace('synchronous = "FULL"', 'synchronous = "FULL"\nlazy_commit_ms = 5000')
        assert held != plain
        conf.write_text(held)

        async def wait_for(predicate: Callable[[], bool]) -> None:
            async with asyncio.timeout(30.0):
                await sim.wait_until(predicate)

        first = await _daemon(conf, url)
        try:
            await wait_for(lambda: sim.binds == 1)
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                body = {"to": CANARY_NUMBER, "body": CANARY_BODY, "route": "carrier"}
                resp = await http.post(f"{url}/api/v1/messages", json=body)
                assert resp.status == 202, await resp.text()
                mid = (await resp.json())["id"]
            # `sent` is committed (the lazy commit, within 5 s) before the receipt leaves.
            await first.wait_log(
                lambda e: e.get("event") == "message_sent" and e.get("message_id") == mid, 30
            )
            clock.advance(1.0)
            await wait_for(lambda: sim.deliveries == 1)
        finally:
            first.proc.kill()
            await first.proc.wait()
        assert sim.receipts_sent == 0  # never acknowledged ...
        assert _state(tmp_path, mid) == ("sent", 0)  # ... and not stored

        conf.write_text(plain)  # the default lazy delay again
        second = await _daemon(conf, url)
        try:
            await wait_for(lambda: sim.receipts_sent == 1)
            # Acknowledged, so committed: another connection sees it.
            assert _state(tmp_path, mid) == ("delivered", 0)
        finally:
            second.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.proc.wait(), 20) == 0
        log_text = "".join(first.lines) + await second.finished()
    assert sim.redelivered == 1 and sim.submits == 1  # the receipt came twice, no resend
    conn = sqlite3.connect(tmp_path / "smsgw.db")
    try:
        events = conn.execute(
            "SELECT state FROM message_events WHERE message_id = ? ORDER BY seq", (mid,)
        ).fetchall()
    finally:
        conn.close()
    assert [e[0] for e in events][-3:] == ["sending", "sent", "delivered"]
    assert [e[0] for e in events].count("delivered") == 1
    assert CANARY_DIGITS not in log_text and CANARY_BODY not in log_text


def _state(data_dir: Path, message_id: str) -> tuple[str, int]:
    """A message's state and duplicate flag, read by a connection of the test's own."""
    conn = sqlite3.connect(data_dir / "smsgw.db")
    try:
        row = conn.execute(
            "SELECT state, possible_duplicate FROM messages WHERE id = ?", (message_id,)
        ).fetchone()
    finally:
        conn.close()
    return str(row[0]), int(row[1])


async def test_state_changes_leave_the_index_by_recipient_alone(
    open_gateway: GatewayFactory,
) -> None:
    """The index by recipient is written at the accept; a claim, a `sent` and a receipt
    (none changes what a frequency cap counts) leave it alone: each used to rewrite the
    message's entry, one page at a random place in it per commit."""
    gw = await open_gateway()
    store = gw.store
    now = gw.clock.time()
    mid = ""

    async def accepted() -> None:
        nonlocal mid
        mid = await accept(gw)

    assert "messages_to" in await _btrees_written(store, accepted())
    steps: list[Callable[[], Awaitable[object]]] = [
        lambda: store.claim(mid, "demo", now),
        lambda: store.mark_sent(mid, "demo", ["t1"], now),
        lambda: store.apply_receipt("demo", "t1", "delivered", None, now),
    ]
    for step in steps:
        written = await _btrees_written(store, step())
        assert "messages" in written and "messages_to" not in written, written
    assert (await message_row(store, mid))["state"] == "delivered"


UNCOUNTED = ("blocked", "cancelled", "expired")


async def test_uncounted_follows_the_state_on_every_path(open_gateway: GatewayFactory) -> None:
    """`uncounted` (what the index by recipient holds instead of the state) is 1 exactly
    for the states no cap counts: set by the insert (a message blocked at its accept)
    and by the UPDATE of each transition into them (cancel, block, expire)."""
    gw = await open_gateway()
    store = gw.store
    waiting, cancelled, blocked, expired, delivered = [await accept(gw) for _ in range(5)]
    now = gw.clock.time()
    refused = NewMessage(
        id=new_message_id(),
        token_id=None,
        priority=Priority.NORMAL,
        to=CANARY_NUMBER,
        body="refused at its accept",
        encoding="gsm7",
        segments=1,
        created_at=now,
        expires_at=now + 3600,
        blocked="opted_out",
    )
    await store.insert(store.insert_statements(refused))
    assert await store.cancel(cancelled, now) is State.CANCELLED
    await store.transition(Transition(blocked, State.BLOCKED, error_code="opted_out"), now)
    await store.transition(Transition(expired, State.EXPIRED, error_code="expired"), now)
    assert await store.claim(delivered, "demo", now) is not None
    await store.mark_sent(delivered, "demo", ["u1"], now)
    await store.apply_receipt("demo", "u1", "delivered", None, now)
    await store.writer.drain()

    def rows(conn: sqlite3.Connection) -> dict[str, tuple[str, int]]:
        query = "SELECT id, state, uncounted FROM messages"
        return {r[0]: (r[1], r[2]) for r in conn.execute(query)}

    got = await store.writer.call_outside_transaction(rows)
    assert got[waiting] == ("queued", 0)
    assert got[delivered] == ("delivered", 0)
    for mid, state in (
        (refused.id, "blocked"),
        (cancelled, "cancelled"),
        (blocked, "blocked"),
        (expired, "expired"),
    ):
        assert got[mid] == (state, 1)
    assert all(uncounted == (state in UNCOUNTED) for state, uncounted in got.values())
    assert {s.value for s in transitions.UNCOUNTED} == set(UNCOUNTED)


def test_migration_32_fills_uncounted_and_rebuilds_the_index_by_recipient(
    tmp_path: Path,
) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    for script in MIGRATIONS[:31]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 31")
    states = ["queued", "sending", "sent", "delivered", "failed", *UNCOUNTED]
    for i, state in enumerate(states):
        conn.execute(
            "INSERT INTO messages (id, priority, state, to_ct, to_index, body_ct, encoding,"
            " segments, created_at, updated_at, expires_at, due_at)"
            " VALUES (?, 2, ?, x'00', x'01', x'00', 'gsm7', 1, ?, ?, ?, ?)",
            (f"m{i}", state, i, i, i + 100, i),
        )
    assert migrate(conn) == len(MIGRATIONS)
    got = dict(conn.execute("SELECT state, uncounted FROM messages").fetchall())
    assert got == {s: int(s in UNCOUNTED) for s in states}
    columns = [r[2] for r in conn.execute("PRAGMA index_info(messages_to)")]
    assert columns == ["to_index", "purpose", "uncounted", "created_at", "send_at"]
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


async def test_a_one_part_receipt_leaves_the_part_row_alone_and_stays_idempotent(
    open_gateway: GatewayFactory,
) -> None:
    """The receipt of a message of one part changes the message, not its part row
    (a page saved per receipt); a duplicate, or a later receipt with another outcome,
    changes nothing. Messages of several parts keep their parts' states
    (test_store.py's multipart tests)."""
    gw = await open_gateway()
    store = gw.store
    mid = await accept(gw)
    now = gw.clock.time()
    assert await store.claim(mid, "demo", now) is not None
    await store.mark_sent(mid, "demo", ["one"], now)
    await store.writer.drain()
    written = await _btrees_written(
        store, store.apply_receipt("demo", "one", "delivered", None, now)
    )
    assert "messages" in written
    assert not written & {"carrier_ids", "carrier_ids_parts"}, written
    for state in ("delivered", "failed"):
        assert await store.apply_receipt("demo", "one", state, "000", now) is None
    assert (await message_row(store, mid))["state"] == "delivered"
    assert [e.state for e in await store.events(mid)].count("delivered") == 1


async def test_a_one_part_sent_leaves_the_index_of_parts_alone(
    open_gateway: GatewayFactory,
) -> None:
    """Migration 35: only messages of several parts are in the index of carrier ids by
    message (their parts numbered from 1); a one-part message's `sent` writes its part
    row (part 0) and not that index. Both kinds' receipts deliver them; a message of
    several parts only once every part is delivered."""
    gw = await open_gateway()
    store = gw.store
    one, three = await accept(gw), await accept(gw, body="x" * 400)
    now = gw.clock.time()
    for mid in (one, three):
        assert await store.claim(mid, "demo", now) is not None
    written = await _btrees_written(store, store.mark_sent(one, "demo", ["o1"], now))
    assert "carrier_ids" in written and "carrier_ids_parts" not in written, written
    written = await _btrees_written(store, store.mark_sent(three, "demo", ["t1", "t2", "t3"], now))
    assert {"carrier_ids", "carrier_ids_parts"} <= written, written
    parts = await store.writer.call_outside_transaction(
        lambda c: c.execute(
            "SELECT carrier_id, part FROM carrier_ids ORDER BY carrier_id"
        ).fetchall()
    )
    assert parts == [("o1", 0), ("t1", 1), ("t2", 2), ("t3", 3)]
    assert await store.apply_receipt("demo", "o1", "delivered", None, now) == (
        one,
        State.DELIVERED,
    )
    for cid in ("t1", "t3"):
        assert await store.apply_receipt("demo", cid, "delivered", None, now) is None
    assert (await message_row(store, three))["state"] == "sent"
    assert await store.apply_receipt("demo", "t2", "delivered", None, now) == (
        three,
        State.DELIVERED,
    )


def test_migration_35_numbers_the_parts_of_several_from_one(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    for script in MIGRATIONS[:34]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 34")
    rows = [("a", "m1", 0), ("b", "m2", 0), ("c", "m2", 1), ("d", "m2", 2)]
    conn.executemany(
        "INSERT INTO carrier_ids (route, carrier_id, message_id, part) VALUES ('r', ?, ?, ?)",
        rows,
    )
    assert migrate(conn) == len(MIGRATIONS)
    got = conn.execute("SELECT carrier_id, part FROM carrier_ids ORDER BY carrier_id").fetchall()
    assert got == [("a", 0), ("b", 1), ("c", 2), ("d", 3)]
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT 1 FROM carrier_ids WHERE message_id = ? AND part > 0",
        ("m2",),
    ).fetchall()
    assert "carrier_ids_parts" in plan[0][3], plan
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


async def test_an_mos_mark_is_one_btree_in_its_commit_and_its_clear_rides_the_next_mo(
    tmp_path: Path,
) -> None:
    """An MO's mark in doubt (migration 43) is written in the MO's own commit: one b-tree
    more, no commit of its own. Its clear rides the next MO's transaction when one comes
    (`bench/wal_pages.py --inbound close`: 7.33 pages a plain MO, 8.26 with the mark);
    alone it is one commit writing that one b-tree (`--inbound apart`)."""
    store = Store(tmp_path / "gw.db", bytes(32))
    await store.open()
    try:
        digests = [
            store.inbound_digest("route:r", CANARY_NUMBER, "4000", f"YES {i}") for i in (1, 2)
        ]

        def deliver(i: int, settle: Settle) -> Awaitable[StoredOnce]:
            marked = Marked(digests[i], KEEP_SECONDS, settle)
            return store.insert_inbound_once(
                f"in-{i}", "r", CANARY_NUMBER, f"YES {i + 1}", "4000", None, 1000.0 + i, marked
            )

        before = store.writer.batches
        first = await _btrees_written(store, deliver(0, Settle()))
        assert store.writer.batches == before + 1
        assert {"inbound", "inbound_doubt"} <= first
        before = store.writer.batches
        cleared = Settle(((digests[0], "in-0"),))
        second = await _btrees_written(store, deliver(1, cleared))
        assert store.writer.batches == before + 1  # the clear in the MO's transaction
        assert {"inbound", "inbound_doubt"} <= second
        cur = await store.reader.execute("SELECT inbound_id FROM inbound_doubt")
        assert [r[0] for r in await cur.fetchall()] == ["in-1"]
        alone = await _btrees_written(
            store, store.settle_inbound_doubt(Settle(((digests[1], "in-1"),)))
        )
        assert alone == {"inbound_doubt"}
        cur = await store.reader.execute("SELECT count(*) FROM inbound_doubt")
        assert tuple(await cur.fetchone()) == (0,)
    finally:
        await store.close()
