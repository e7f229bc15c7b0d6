"""The receipt deadline's sweep walks the `sent` messages by creation time from a floor
(`gateway/store/receipt_deadline.py`, migration 40), not an index of the messages
awaiting a receipt: a message sent long after it was created (below the floor) is still
found when it falls due, one the walk passes before it is due is listed until its
receipt, the sweep reads what fell due rather than every message waiting, and a store
with data migrates with its floor at the oldest message still waiting."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from gateway.models import Priority, new_message_id
from gateway.store.store import NewMessage, Store
from tests.store_rows import undo_migrations_from_40

HOUR = 3600.0
T0 = 1_700_000_000.0
WANTING = [int(p) for p in Priority]


async def _message(store: Store, created_at: float) -> str:
    m = NewMessage(
        id=new_message_id(),
        token_id=None,
        priority=Priority.NORMAL,
        to="+12025550100",
        body="reminder",
        encoding="gsm7",
        segments=1,
        created_at=created_at,
        expires_at=created_at + 400 * HOUR,
    )
    await store.insert(store.insert_statements(m))
    return m.id


async def _sent(store: Store, message_id: str, at: float) -> None:
    assert await store.claim(message_id, "r1", at) is not None
    await store.mark_sent(message_id, "r1", [message_id], at)


async def _overdue(store: Store, ids: list[str]) -> list[int]:
    flags = []
    for mid in ids:
        row = await store.reader.one("SELECT receipt_overdue FROM messages WHERE id = ?", (mid,))
        assert row is not None
        flags.append(int(row[0]))
    return flags


async def _listed(store: Store) -> list[str]:
    return [str(r[0]) for r in await store.reader.all("SELECT id FROM receipts_later")]


async def test_a_message_sent_below_the_floor_is_flagged_when_it_falls_due(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "smsgw.db", os.urandom(32))
    await store.open()
    try:
        held = await _message(store, T0)  # scheduled: sent two hours after its creation
        prompt = await _message(store, T0 + 1)
        await _sent(store, prompt, T0 + 1)
        swept = await store.sweep_receipts(T0 + 1, WANTING, T0 + 1 + HOUR, 100)
        assert swept.overdue == [(prompt, "r1")] and swept.oldest_waiting is None
        assert await _listed(store) == []  # the floor is at `prompt` now, above `held`

        await _sent(store, held, T0 + 2 * HOUR)
        assert await _listed(store) == [held]  # by the trigger: below the floor
        early = await store.sweep_receipts(T0 + HOUR, WANTING, T0 + 2 * HOUR, 100)
        assert early.overdue == [] and early.oldest_waiting == T0 + 2 * HOUR
        due = await store.sweep_receipts(T0 + 2 * HOUR, WANTING, T0 + 3 * HOUR, 100)
        assert due.overdue == [(held, "r1")]
        assert await _overdue(store, [held, prompt]) == [1, 1]
        assert await _listed(store) == []
    finally:
        await store.close()


async def test_a_waiting_message_passed_by_the_walk_is_listed_until_it_is_due(
    tmp_path: Path,
) -> None:
    """The walk reads what was created by the cutoff; one sent after it (it waited in the
    queue) is listed by its send time, and its receipt in time leaves nothing to flag."""
    store = Store(tmp_path / "smsgw.db", os.urandom(32))
    await store.open()
    try:
        slow = await _message(store, T0)
        await _sent(store, slow, T0 + 600)
        quick = await _message(store, T0 + 10)
        await _sent(store, quick, T0 + 10)
        swept = await store.sweep_receipts(T0 + 5, WANTING, T0 + 5 + HOUR, 100)
        assert swept.overdue == []
        assert await _listed(store) == [slow]
        assert swept.oldest_waiting == T0 + 10  # `quick`: created (so sent) no earlier
        assert await store.apply_receipt("r1", slow, "delivered", None, T0 + 700) is not None
        later = await store.sweep_receipts(T0 + 700, WANTING, T0 + 700 + HOUR, 100)
        assert later.overdue == [(quick, "r1")]
        assert await _listed(store) == [] and later.oldest_waiting is None
    finally:
        await store.close()


async def test_a_sweep_reads_what_fell_due_not_every_message_waiting(tmp_path: Path) -> None:
    store = Store(tmp_path / "smsgw.db", os.urandom(32))
    await store.open()
    try:
        ids = await asyncio.gather(*(_message(store, T0 + n) for n in range(300)))
        await asyncio.gather(*(_sent(store, mid, T0 + n) for n, mid in enumerate(ids)))
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        def sweep_counted(conn: sqlite3.Connection, sent_before: float) -> int:
            from gateway.store import receipt_deadline

            steps[0] = 0
            conn.set_progress_handler(count, 1)
            try:
                swept = receipt_deadline.sweep(conn, sent_before, WANTING, T0 + HOUR, 100)
            finally:
                conn.set_progress_handler(None, 1)
            assert len(swept.overdue) == 5 and not swept.more
            return steps[0]

        first = await store.writer.run(lambda c: sweep_counted(c, T0 + 4))
        # The next five: the walk starts where the last one stopped.
        second = await store.writer.run(lambda c: sweep_counted(c, T0 + 9))
        assert second < first + 200, (first, second)
        assert second < 3000, second  # a walk of the 290 waiting would be far more
    finally:
        await store.close()


async def test_migration_40_starts_the_floor_at_the_oldest_message_waiting(
    tmp_path: Path,
) -> None:
    path, key = tmp_path / "smsgw.db", os.urandom(32)
    store = Store(path, key)
    await store.open()
    flagged = await _message(store, T0)
    await _sent(store, flagged, T0)
    await store.sweep_receipts(T0, WANTING, T0 + HOUR, 100)
    queued = await _message(store, T0 + 5)  # sent after the migration, below the floor
    waiting = await _message(store, T0 + 10)
    await _sent(store, waiting, T0 + 10)
    await store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    undo_migrations_from_40(conn)
    conn.execute("PRAGMA user_version = 39")
    conn.close()

    store = Store(path, key)
    await store.open()
    try:
        floor = await store.reader.one("SELECT created_at, id FROM receipt_floor")
        assert floor is not None and tuple(floor) == (T0 + 10, "")
        names = {r[0] for r in await store.reader.all("SELECT name FROM sqlite_schema")}
        assert not names & {"messages_awaiting_receipt", "messages_created"}
        await _sent(store, queued, T0 + 20)
        assert await _listed(store) == [queued]
        swept = await store.sweep_receipts(T0 + 20, WANTING, T0 + 20 + HOUR, 100)
        assert sorted(swept.overdue) == sorted([(queued, "r1"), (waiting, "r1")])
        assert await _overdue(store, [flagged, queued, waiting]) == [1, 1, 1]
    finally:
        await store.close()
