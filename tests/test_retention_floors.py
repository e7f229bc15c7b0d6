"""The retention sweep finds texts due by walking messages by creation time from a floor
per purpose (`gateway/retention/text_walk.py`, migration 39), not by an index of the
rows whose text is kept: a purpose kept longer holds back only its own floor, a message
not due when walked is looked at again, one inserted below a floor (a clock set back)
is still found, and a store with data migrates with its floors where its texts start."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

from gateway.models import Priority, State, new_message_id
from gateway.retention import sweep
from gateway.retention.settings import PurposeRetention, RetentionConfig
from gateway.store.store import NewMessage, Store
from tests.store_rows import undo_migrations_from_40

DAY = 86400.0
T0 = 1_700_000_000.0
CONFIG = RetentionConfig(
    body_days=30, number_days=400, batch=10, purposes={"emergency": PurposeRetention(body_days=300)}
)


async def _delivered(store: Store, at: float, purpose: str | None = None, n: int = 1) -> list[str]:
    """`n` messages created and delivered at `at`, each step in one commit for all."""
    batch = [
        NewMessage(
            id=new_message_id(),
            token_id=None,
            priority=Priority.NORMAL,
            to="+12025550100",
            body="reminder",
            encoding="gsm7",
            segments=1,
            created_at=at,
            expires_at=at + DAY,
            purpose=purpose,
        )
        for _ in range(n)
    ]
    await asyncio.gather(*(store.insert(store.insert_statements(m)) for m in batch))
    claims = await asyncio.gather(*(store.claim(m.id, "r1", at) for m in batch))
    assert None not in claims
    await asyncio.gather(*(store.mark_sent(m.id, "r1", [m.id], at) for m in batch))
    receipts = [store.apply_receipt("r1", m.id, "delivered", None, at) for m in batch]
    assert None not in await asyncio.gather(*receipts)
    return [m.id for m in batch]


async def _queued(store: Store, at: float) -> str:
    m = NewMessage(
        id=new_message_id(),
        token_id=None,
        priority=Priority.NORMAL,
        to="+12025550101",
        body="reminder",
        encoding="gsm7",
        segments=1,
        created_at=at,
        expires_at=at + 400 * DAY,
    )
    await store.insert(store.insert_statements(m))
    return m.id


async def _sweep(store: Store, now: float) -> int:
    """Every batch until none removes a text; the texts removed."""
    cipher = store.cipher
    assert cipher is not None
    total = 0
    while True:
        done = await store.writer.run(lambda c: sweep.sweep_batch(c, cipher, CONFIG, now))
        total += done["message_texts"]
        if not any(done.values()):
            return total


async def _kept(store: Store, ids: list[str]) -> list[bool]:
    rows = [await store.reader.one("SELECT redacted FROM messages WHERE id = ?", (i,)) for i in ids]
    return [row is not None and row[0] == 0 for row in rows]


async def _floors(store: Store) -> dict[str, float]:
    rows = await store.reader.all("SELECT purpose, created_at FROM retention_floors")
    return {str(p): float(c) for p, c in rows}


async def _due(store: Store, now: float) -> int:
    counts = await store.writer.run(lambda c: sweep.due_counts(c, CONFIG, now))
    return int(counts["message_texts"])


async def test_each_purpose_walks_from_its_own_floor(tmp_path: Path) -> None:
    store = Store(tmp_path / "smsgw.db", os.urandom(32))
    await store.open()
    try:
        kept_long = await _delivered(store, T0, "emergency")
        old = await _delivered(store, T0 + DAY, n=25)  # more than a batch of 10
        waiting = await _queued(store, T0 + 2 * DAY)
        recent = await _delivered(store, T0 + 50 * DAY)
        now = T0 + 40 * DAY
        assert await _due(store, now) == 25
        assert await _sweep(store, now) == 25
        assert await _kept(store, old) == [False] * 25
        assert await _kept(store, kept_long + recent + [waiting]) == [True] * 3
        floors = await _floors(store)
        # The rest walked past the emergency message it does not own; the emergency
        # floor stays where its own cutoff (300 days) left it.
        assert floors["*"] == now - 30 * DAY
        assert floors["emergency"] < T0
        assert await _due(store, now) == 0
        # The queued message was passed: it waits in the list, not behind the floor.
        assert [r[0] for r in await store.reader.all("SELECT id FROM retention_later")] == [waiting]

        # It finishes later: found again from the list once its last change is old.
        await store.writer.run(
            lambda c: c.execute(
                "UPDATE messages SET state = ?, updated_at = ? WHERE id = ?",
                (State.EXPIRED.value, T0 + 45 * DAY, waiting),
            )
        )
        now = T0 + 90 * DAY
        assert await _due(store, now) == 2  # it and `recent`
        assert await _sweep(store, now) == 2
        assert await _kept(store, [*recent, waiting]) == [False, False]
        assert await store.reader.all("SELECT id FROM retention_later") == []
        assert await _kept(store, kept_long) == [True]
        assert await _sweep(store, T0 + 301 * DAY) == 1
        assert await _kept(store, kept_long) == [False]
    finally:
        await store.close()


async def test_a_message_created_below_its_floor_is_still_swept(tmp_path: Path) -> None:
    store = Store(tmp_path / "smsgw.db", os.urandom(32))
    await store.open()
    try:
        await _delivered(store, T0)
        now = T0 + 40 * DAY
        assert await _sweep(store, now) == 1
        assert (await _floors(store))["*"] == now - 30 * DAY
        # A clock set back: accepted "before" the floor the last run left.
        (late,) = await _delivered(store, T0 + DAY, "appointment_reminder")
        assert (await _floors(store))["appointment_reminder"] == T0 + DAY
        assert await _due(store, now) == 1
        assert await _sweep(store, now) == 1
        assert await _kept(store, [late]) == [False]
    finally:
        await store.close()


async def test_migration_39_starts_each_floor_at_its_oldest_kept_text(tmp_path: Path) -> None:
    path, key = tmp_path / "smsgw.db", os.urandom(32)
    store = Store(path, key)
    await store.open()
    ids = await _delivered(store, T0, n=3)
    urgent = await _delivered(store, T0 + DAY, "emergency")
    waiting = await _queued(store, T0 - DAY)  # below the floor: would hold it back
    await store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    undo_migrations_from_40(conn)
    conn.execute("DROP TRIGGER messages_below_retention_floor")
    conn.execute("DROP TABLE retention_floors")
    conn.execute("DROP TABLE retention_later")
    conn.execute("CREATE INDEX messages_text_kept ON messages (created_at) WHERE redacted = 0")
    conn.execute("UPDATE messages SET redacted = 1 WHERE id = ?", (ids[0],))
    conn.execute("PRAGMA user_version = 38")
    conn.close()

    store = Store(path, key)
    await store.open()
    try:
        floors: dict[str, Any] = await _floors(store)
        assert floors == {"": T0, "emergency": T0 + DAY, "*": T0 + DAY}
        later = await store.reader.all("SELECT id FROM retention_later")
        assert [tuple(r) for r in later] == [(waiting,)]
        assert await _sweep(store, T0 + 40 * DAY) == 2
        assert await _kept(store, ids + urgent) == [False, False, False, True]
        names = {r[0] for r in await store.reader.all("SELECT name FROM sqlite_schema")}
        assert "messages_text_kept" not in names
    finally:
        await store.close()
