"""A message's events found by the seqs its row keeps (migration 38), not by an index of
events by message: what the migration makes of a store with data, and the trigger that
keeps the seqs for events written afterwards."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

from gateway.store.schema import MIGRATIONS
from gateway.store.store import Store
from tests.store_rows import reminder, undo_migrations_from_40

ROUTE = "r1"


async def _interleaved_lives(store: Store, count: int) -> list[str]:
    """`count` messages whose events interleave: all claimed, then all sent, then
    receipts newest first; the last one stays queued, with no event."""
    now = time.time()
    batch = [reminder(i, now) for i in range(count)]
    for m in batch:
        await store.insert(store.insert_statements(m))
    moving = batch[:-1]
    # Each step for all in one commit (the writer takes them in this order).
    assert None not in await asyncio.gather(*(store.claim(m.id, ROUTE, now) for m in moving))
    await asyncio.gather(
        *(store.mark_sent(m.id, ROUTE, [f"c{i}"], now) for i, m in enumerate(moving))
    )
    receipts = [
        store.apply_receipt(ROUTE, f"c{i}", "delivered", None, now)
        for i in reversed(range(len(moving)))
    ]
    assert None not in await asyncio.gather(*receipts)
    return [m.id for m in batch]


def _as_at_37(path: Path) -> None:
    """The store as migration 37 left it: no seqs on the rows, the index by message
    (and, from migrations 39 to 42, the index of kept texts, no retention floors, the
    indexes of messages awaiting a receipt and by creation time, no receipt floor, no
    write-back attempt marks)."""
    conn = sqlite3.connect(path, isolation_level=None)
    undo_migrations_from_40(conn)
    conn.execute("DROP TRIGGER messages_below_retention_floor")
    conn.execute("DROP TABLE retention_floors")
    conn.execute("DROP TABLE retention_later")
    conn.execute("CREATE INDEX messages_text_kept ON messages (created_at) WHERE redacted = 0")
    conn.execute("DROP TRIGGER message_events_on_message")
    conn.execute("ALTER TABLE messages DROP COLUMN event_seqs")
    conn.execute("CREATE INDEX message_events_message ON message_events (message_id, seq)")
    conn.execute("PRAGMA user_version = 37")
    conn.close()


def _events_byreminder(path: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT message_id, seq, at, state, route, carrier_id FROM message_events ORDER BY seq"
    ).fetchall()
    conn.close()
    out: dict[str, list[tuple[object, ...]]] = {}
    for message_id, *event in rows:
        out.setdefault(message_id, []).append(tuple(event))
    return out


async def test_migration_38_keeps_each_message_events_and_their_order(tmp_path: Path) -> None:
    path, key = tmp_path / "smsgw.db", os.urandom(32)
    store = Store(path, key)
    await store.open()
    ids = await _interleaved_lives(store, 6)
    histories = {i: await store.events(i) for i in ids}
    await store.close()
    _as_at_37(path)
    before = _events_byreminder(path)
    assert len(before) == 5  # the queued one has none

    store = Store(path, key)
    await store.open()  # migrates to the last version
    try:
        assert {i: await store.events(i) for i in ids} == histories
        assert histories[ids[0]][-1].state == "delivered"
        assert [e.state for e in histories[ids[-1]]] == ["queued"]
        # A message after the migration: the trigger keeps its seqs.
        (later,) = await _interleaved_lives(store, 1)
        assert [e.state for e in await store.events(later)] == ["queued"]
        (moved, _) = await _interleaved_lives(store, 2)
        assert [e.state for e in await store.events(moved)] == [
            "queued",
            "sending",
            "sent",
            "delivered",
        ]
    finally:
        await store.close()

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert _events_byreminder(path).items() >= before.items()  # seqs, times, ids intact
        for message_id, events in before.items():
            (kept,) = conn.execute(
                "SELECT event_seqs FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            assert kept == "[" + ",".join(str(e[0]) for e in events) + "]"
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_schema")}
        assert "message_events_message" not in names
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


async def test_a_history_is_read_by_seq_not_by_walking_the_events(tmp_path: Path) -> None:
    store = Store(tmp_path / "smsgw.db", os.urandom(32))
    await store.open()
    try:
        (moved, _) = await _interleaved_lives(store, 2)
        plan = await store.reader.all(
            "EXPLAIN QUERY PLAN SELECT at FROM message_events WHERE seq IN"
            " (SELECT j.value FROM messages m, json_each(m.event_seqs) j WHERE m.id = ?)",
            (moved,),
        )
    finally:
        await store.close()
    details = " | ".join(str(row[3]) for row in plan)
    assert "SCAN message_events" not in details, details
    assert "INTEGER PRIMARY KEY" in details, details
