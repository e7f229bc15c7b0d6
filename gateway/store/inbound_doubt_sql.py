"""The durable marks of inbound deliveries in doubt, in the SQLite store: the SQL
(`gateway/inbound_doubt.py` says why; the table is migration 43's).

The owner of a mark is the process that delivered it last (`Store`'s random token):
a mark of another process, on the one store a single gateway uses, was left by one
that stopped or died before clearing it, so it is in doubt."""

from __future__ import annotations

import sqlite3

from gateway.inbound_doubt import Settle

_TAKE = (
    "SELECT inbound_id FROM inbound_doubt WHERE digest = ? AND at > ?"
    " AND (failed = 1 OR owner <> ?) ORDER BY at, inbound_id LIMIT 1"
)


def settle(conn: sqlite3.Connection, s: Settle, owner: str) -> None:
    """Flag failed marks, clear acknowledged ones, sweep expired ones."""
    if s.failed:
        conn.executemany(
            "UPDATE inbound_doubt SET failed = 1 WHERE digest = ? AND owner = ?",
            [(d, owner) for d in s.failed],
        )
    if s.cleared:
        conn.executemany("DELETE FROM inbound_doubt WHERE digest = ? AND inbound_id = ?", s.cleared)
    if s.expired is not None:
        conn.execute("DELETE FROM inbound_doubt WHERE at <= ?", (s.expired,))


def take(conn: sqlite3.Connection, digest: bytes, since: float, owner: str) -> str | None:
    """The id of the oldest mark of `digest` in doubt kept since `since`, made
    `owner`'s (in flight again); None if there is none."""
    row = conn.execute(_TAKE, (digest, since, owner)).fetchone()
    if row is None:
        return None
    conn.execute(
        "UPDATE inbound_doubt SET owner = ?, failed = 0 WHERE digest = ? AND inbound_id = ?",
        (owner, digest, row[0]),
    )
    return str(row[0])


def mark(conn: sqlite3.Connection, digest: bytes, inbound_id: str, at: float, owner: str) -> None:
    conn.execute(
        "INSERT INTO inbound_doubt (digest, inbound_id, at, owner) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (digest, inbound_id) DO UPDATE SET owner = excluded.owner, failed = 0",
        (digest, inbound_id, at, owner),
    )
