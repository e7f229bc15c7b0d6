"""Each transition's UPDATE lists its own event's seq on the message row (migration 44):
the store numbers a group's events before writing them, marks them `on_row`, and the
trigger lists only unmarked events' seqs (a hold's, any other writer's)."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from gateway.store.claim_check import ClaimSubject, Held
from gateway.store.store import Store
from gateway.store.transitions import INSERT_EVENT
from tests.store_rows import reminder, undo_migration_44

ROUTE = "r1"


def _listed_and_written(path: Path) -> dict[str, tuple[str, list[int], list[object]]]:
    """Per message: its `event_seqs`, its events' seqs in order, and their marks."""
    conn = sqlite3.connect(path)
    try:
        kept = dict(conn.execute("SELECT id, event_seqs FROM messages").fetchall())
        out: dict[str, tuple[str, list[int], list[object]]] = {
            i: (seqs, [], []) for i, seqs in kept.items()
        }
        for message_id, seq, mark in conn.execute(
            "SELECT message_id, seq, on_row FROM message_events ORDER BY seq"
        ):
            out[message_id][1].append(seq)
            out[message_id][2].append(mark)
        return out
    finally:
        conn.close()


async def test_a_groups_events_are_listed_by_their_updates_and_a_holds_by_the_trigger(
    tmp_path: Path,
) -> None:
    path, now = tmp_path / "smsgw.db", time.time()
    store = Store(path, os.urandom(32))
    await store.open()
    try:
        batch = [reminder(i, now) for i in range(6)]
        for m in batch:
            await store.insert(store.insert_statements(m))
        held, blocked = {batch[1].id, batch[4].id}, batch[2].id

        def check(_: sqlite3.Connection, subject: ClaimSubject) -> str | Held | None:
            if subject.message_id in held:
                return Held(now + 60, "quiet_hours")
            return "consent:opted_out" if subject.message_id == blocked else None

        store.claim_check = check
        # One group, its events interleaved: claims, holds (numbered, listed by the
        # trigger) and a block, in the order of the group.
        claimed = await store.claim_group([m.id for m in batch], ROUTE, now)
        sending = [m.id for m, c in zip(batch, claimed, strict=True) if c is not None]
        sending = [i for i in sending if i not in held]
        assert len(sending) == 3
        for n, message_id in enumerate(sending):
            await store.mark_sent(message_id, ROUTE, [f"c{n}"], now)
        assert await store.apply_receipt(ROUTE, "c0", "delivered", None, now) is not None
    finally:
        await store.close()

    # Another writer's event (a test's, a benchmark's): the trigger lists it.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(INSERT_EVENT, (sending[1], now, "failed", ROUTE, None, "x", 1))
    conn.close()

    rows = _listed_and_written(path)
    for message_id, (listed, written, _) in rows.items():
        assert listed == "[" + ",".join(map(str, written)) + "]", message_id
    assert rows[sending[0]][2] == [1, 1, 1]  # sending, sent, delivered
    assert rows[sending[1]][2] == [1, 1, None]
    assert rows[blocked][2] == [1]
    assert all(rows[h][2] == [None] for h in held)


async def test_migration_44_keeps_the_seqs_and_marks_no_old_event(tmp_path: Path) -> None:
    path, now, key = tmp_path / "smsgw.db", time.time(), os.urandom(32)
    store = Store(path, key)
    await store.open()
    m = reminder(1, now)
    await store.insert(store.insert_statements(m))
    await store.claim(m.id, ROUTE, now)
    await store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    undo_migration_44(conn)
    conn.execute("PRAGMA user_version = 43")
    conn.close()

    store = Store(path, key)
    await store.open()  # migrates to 44
    try:
        await store.mark_sent(m.id, ROUTE, ["c1"], now)
    finally:
        await store.close()
    ((listed, written, marks),) = _listed_and_written(path).values()
    assert listed == "[" + ",".join(map(str, written)) + "]"
    assert marks == [None, 1]
