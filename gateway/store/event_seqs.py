"""A group's event rows numbered before they are written, so that each transition's
UPDATE appends its event's seq to the message's `event_seqs` itself (migration 44):
the trigger that otherwise appends it rewrites the message row a second time, about
4 µs of the writer's SQL per event (bench/README.md, "fourth pass").

An event row is (message_id, at, state, route, carrier_id, error_code, attempt, seq,
on_row): `seq` is the rowid SQLite would have given it (one more than the largest), and
`on_row` is 1 when the UPDATE has appended it, None when the trigger is to.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

INSERT_NUMBERED = (
    "INSERT INTO message_events (message_id, at, state, route, carrier_id, error_code,"
    " attempt, seq, on_row) VALUES (?,?,?,?,?,?,?,?,?)"
)


def next_seq(conn: sqlite3.Connection, pending: Sequence[tuple[Any, ...]]) -> int:
    """The seq of the next event row: after the last one `pending` (rows numbered in
    this transaction, not yet written), else after the table's largest. Nothing else
    may insert events between numbering and writing them: a clash is an error."""
    if pending:
        return int(pending[-1][7]) + 1
    row = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM message_events").fetchone()
    return int(row[0])
