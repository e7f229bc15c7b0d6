"""Raw rows for tests that check columns the typed reads do not show (attempts,
route, ciphertexts, ...): read-only, through the store's read pool. The gateway
itself reads messages and inbound messages through `gateway/store/records.py`."""

from __future__ import annotations

import sqlite3

from gateway.store.store import Store


async def message_row(store: Store, message_id: str) -> sqlite3.Row | None:
    """Every column of one message, or None."""
    return await store.reader.one("SELECT * FROM messages WHERE id = ?", (message_id,))


async def inbound_rows(store: Store, limit: int) -> list[sqlite3.Row]:
    """Every column of the newest `limit` inbound messages, newest id first."""
    return await store.reader.all("SELECT * FROM inbound ORDER BY id DESC LIMIT ?", (limit,))
