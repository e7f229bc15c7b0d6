"""The receipt deadline's sweep: `sent` messages whose receipt is overdue.

A message stays `sent` until its receipt comes; after `[queue] receipt_deadline` without
one it is flagged `receipt_overdue` and an event records when. It is not failed: the
carrier may still deliver it, and a late receipt completes it as usual. Messages of a
class that asks for no receipt are set aside at the same point, unreported.

No index of the messages awaiting a receipt (migration 40 dropped it: every `sent` and
every receipt wrote a page of it, bench/README.md "Disk writes per message"). The sweep
walks the index by state and creation time (`messages_state`, which every transition
writes anyway) from a floor, `receipt_floor`: every `sent` message still waiting
(`receipt_overdue = 0`) was created after the floor's (created_at, id), or is listed in
`receipts_later` by the time it became `sent`. A message is sent after it is created,
so one sent before the cutoff was created before it: the walk reads the `sent` rows
created between the floor and the cutoff, flags those due, lists the others (sent
later than they were created: held, scheduled, retried) in `receipts_later`, and
raises the floor to where it stopped. A message that becomes `sent` at or below the
floor (a scheduled reminder created days before) is listed there by a trigger
(migration 40), so it is found when it falls due like any other. Each sweep reads what
fell due since the last, not every message waiting.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

WAITING, OVERDUE, NOT_EXPECTED = 0, 1, 2
EVENT = "receipt_overdue"
ERROR_CODE = "gateway:receipt_overdue"

# The `sent` rows created after the floor and by the cutoff, oldest first.
_WALK = (
    "SELECT id, created_at, priority, route, attempts, updated_at, receipt_overdue"
    " FROM messages INDEXED BY messages_state WHERE state = 'sent'"
    " AND (created_at, id) > (?, ?) AND created_at <= ? ORDER BY created_at, id LIMIT ?"
)
# Listed messages whose listing fell due, with what they are now (gone: NULLs).
_LISTED = (
    "SELECT l.sent_at, l.id, m.priority, m.route, m.attempts, m.updated_at,"
    " m.state = 'sent' AND m.receipt_overdue = 0"
    " FROM receipts_later l LEFT JOIN messages m ON m.id = l.id"
    " WHERE l.sent_at <= ? ORDER BY l.sent_at LIMIT ?"
)


@dataclass(frozen=True, slots=True)
class Sweep:
    overdue: list[tuple[str, str | None]]  # (message id, route) flagged now
    more: bool  # the batch was full: sweep again at once
    # No message still waiting became `sent` before this: the next sweep is due a
    # deadline after it (never later than the oldest's, at times a little earlier).
    oldest_waiting: float | None


def sweep(
    conn: sqlite3.Connection,
    sent_before: float,
    wanting_receipts: Collection[int],
    now: float,
    limit: int,
) -> Sweep:
    """Flag up to `limit` messages `sent` before `sent_before` and still waiting (those
    of the priorities in `wanting_receipts`; the others are set aside unreported)."""
    due: list[tuple[str, int, str | None, int]] = []  # id, priority, route, attempts
    relist: list[tuple[float, str]] = []
    listed = conn.execute(_LISTED, (sent_before, limit)).fetchall()
    conn.executemany(
        "DELETE FROM receipts_later WHERE sent_at = ? AND id = ?", [r[:2] for r in listed]
    )
    for _sent_at, mid, priority, route, attempts, updated_at, waiting in listed:
        if waiting and updated_at <= sent_before:
            due.append((mid, priority, route, attempts))
        elif waiting:  # changed since it was listed: due a deadline after that
            relist.append((updated_at, mid))
    floor = conn.execute("SELECT created_at, id FROM receipt_floor").fetchone()
    walked = conn.execute(_WALK, (*floor, sent_before, limit)).fetchall()
    for mid, _created_at, priority, route, attempts, updated_at, overdue in walked:
        if overdue != WAITING:
            continue
        if updated_at <= sent_before:
            due.append((mid, priority, route, attempts))
        else:
            relist.append((updated_at, mid))
    conn.executemany("INSERT OR IGNORE INTO receipts_later (sent_at, id) VALUES (?, ?)", relist)
    if walked:
        last_id, last_created_at = walked[-1][:2]
        conn.execute("UPDATE receipt_floor SET created_at = ?, id = ?", (last_created_at, last_id))
    _flag(conn, due, wanting_receipts, now)
    more = len(listed) == limit or len(walked) == limit
    overdue = [(mid, route) for mid, priority, route, _ in due if priority in wanting_receipts]
    return Sweep(overdue, more, None if more else _oldest_waiting(conn))


def _flag(
    conn: sqlite3.Connection,
    due: list[tuple[str, int, str | None, int]],
    wanting_receipts: Collection[int],
    now: float,
) -> None:
    marks = [(OVERDUE if p in wanting_receipts else NOT_EXPECTED, mid) for mid, p, _, _ in due]
    conn.executemany("UPDATE messages SET receipt_overdue = ? WHERE id = ?", marks)
    conn.executemany(
        "INSERT INTO message_events (message_id, at, state, route, carrier_id, error_code,"
        " attempt) VALUES (?,?,?,?,NULL,?,?)",
        [
            (mid, now, EVENT, route, ERROR_CODE, attempts)
            for mid, p, route, attempts in due
            if p in wanting_receipts
        ],
    )


def _oldest_waiting(conn: sqlite3.Connection) -> float | None:
    """A time no waiting message was sent before: the earliest listing (which may have
    its receipt already: the sweep then only drops it), or the creation of the first
    `sent` message above the floor (it was sent at or after it)."""
    row: Any = conn.execute(
        "SELECT min(x) FROM (SELECT min(sent_at) AS x FROM receipts_later UNION ALL"
        " SELECT (SELECT m.created_at FROM messages m INDEXED BY messages_state"
        " WHERE m.state = 'sent' AND (m.created_at, m.id) > (f.created_at, f.id)"
        " ORDER BY m.created_at, m.id LIMIT 1) FROM receipt_floor f)"
    ).fetchone()
    return None if row[0] is None else float(row[0])
