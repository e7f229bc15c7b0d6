"""Raw rows for tests that check columns the typed reads do not show (attempts,
route, ciphertexts, ...): read-only, through the store's read pool. The gateway
itself reads messages and inbound messages through `gateway/store/records.py`. Also
the undoing of later migrations, for tests of a migration on data, and a plain
message to store."""

from __future__ import annotations

import sqlite3

from gateway.models import Priority, new_message_id
from gateway.store.store import NewMessage, Store


async def message_row(store: Store, message_id: str) -> sqlite3.Row | None:
    """Every column of one message, or None."""
    return await store.reader.one("SELECT * FROM messages WHERE id = ?", (message_id,))


async def inbound_rows(store: Store, limit: int) -> list[sqlite3.Row]:
    """Every column of the newest `limit` inbound messages, newest id first."""
    return await store.reader.all("SELECT * FROM inbound ORDER BY id DESC LIMIT ?", (limit,))


def reminder(i: int, now: float) -> NewMessage:
    """A one-part normal message to the `i`th of 10,000 numbers, created at `now`."""
    return NewMessage(
        id=new_message_id(),
        token_id=None,
        priority=Priority.NORMAL,
        to=f"+1202555{i:04d}",
        body=f"reminder {i}",
        encoding="gsm7",
        segments=1,
        created_at=now,
        expires_at=now + 86_400,
    )


def undo_migration_44(conn: sqlite3.Connection) -> None:
    """Every event's seq listed by the trigger again, no `on_row` mark (migration 43's)."""
    conn.execute("DROP TRIGGER message_events_on_message")
    conn.execute(
        "CREATE TRIGGER message_events_on_message AFTER INSERT ON message_events BEGIN"
        " UPDATE messages SET event_seqs = json_insert(event_seqs, '$[#]', NEW.seq)"
        " WHERE id = NEW.message_id; END"
    )
    conn.execute("ALTER TABLE message_events DROP COLUMN on_row")


def undo_migrations_from_40(conn: sqlite3.Connection) -> None:
    """Back to the store migration 39 left (for a test of an older migration on data):
    the index of messages awaiting a receipt and the one by creation time, no receipt
    floor (40, 41), no write-back attempt marks (42), no inbound marks in doubt (43),
    every event's seq listed by the trigger (44). The caller sets `user_version`."""
    undo_migration_44(conn)
    conn.execute("DROP TABLE inbound_doubt")
    conn.execute("ALTER TABLE hl7_outbound DROP COLUMN sending_at")
    conn.execute("ALTER TABLE hl7_outbound DROP COLUMN possible_duplicate")
    conn.execute("DROP TRIGGER messages_sent_below_receipt_floor")
    conn.execute("DROP TRIGGER messages_stored_sent_below_receipt_floor")
    conn.execute("DROP TABLE receipt_floor")
    conn.execute("DROP TABLE receipts_later")
    conn.execute(
        "CREATE INDEX messages_awaiting_receipt ON messages (updated_at)"
        " WHERE state = 'sent' AND receipt_overdue = 0"
    )
    conn.execute("CREATE INDEX messages_created ON messages (created_at)")
