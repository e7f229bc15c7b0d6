"""The receipt deadline's sweep: `sent` messages whose receipt is overdue.

A message stays `sent` until its receipt comes; after `[queue] receipt_deadline` without
one it is flagged `receipt_overdue` and an event records when. It is not failed: the
carrier may still deliver it, and a late receipt completes it as usual. Messages of a
class that asks for no receipt are set aside at the same point, unreported. Both leave
the partial index `messages_awaiting_receipt`, so each sweep reads only what fell due
since the last one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from dataclasses import dataclass

WAITING, OVERDUE, NOT_EXPECTED = 0, 1, 2
EVENT = "receipt_overdue"
ERROR_CODE = "gateway:receipt_overdue"


@dataclass(frozen=True, slots=True)
class Sweep:
    overdue: list[tuple[str, str | None]]  # (message id, route) flagged now
    more: bool  # the batch was full: sweep again at once
    oldest_waiting: float | None  # when the longest-waiting message became `sent`


def sweep(
    conn: sqlite3.Connection,
    sent_before: float,
    wanting_receipts: Collection[int],
    now: float,
    limit: int,
) -> Sweep:
    """Flag up to `limit` messages `sent` before `sent_before` and still waiting (those
    of the priorities in `wanting_receipts`; the others are set aside unreported)."""
    # Named, or the planner walks every `sent` row by `messages_state`; the literal
    # `state = 'sent' AND receipt_overdue = 0` is what makes the partial index usable.
    due = conn.execute(
        "SELECT id, priority, route, attempts FROM messages"
        " INDEXED BY messages_awaiting_receipt WHERE state = 'sent' AND receipt_overdue = 0"
        " AND updated_at <= ? ORDER BY updated_at LIMIT ?",
        (sent_before, limit),
    ).fetchall()
    marks = [(OVERDUE if row[1] in wanting_receipts else NOT_EXPECTED, row[0]) for row in due]
    conn.executemany("UPDATE messages SET receipt_overdue = ? WHERE id = ?", marks)
    overdue = [row for row in due if row[1] in wanting_receipts]
    conn.executemany(
        "INSERT INTO message_events (message_id, at, state, route, carrier_id, error_code,"
        " attempt) VALUES (?,?,?,?,NULL,?,?)",
        [(i, now, EVENT, route, ERROR_CODE, attempts) for i, _, route, attempts in overdue],
    )
    oldest = conn.execute(
        "SELECT min(updated_at) FROM messages INDEXED BY messages_awaiting_receipt"
        " WHERE state = 'sent' AND receipt_overdue = 0"
    ).fetchone()[0]
    flagged = [(i, route) for i, _, route, _ in overdue]
    return Sweep(flagged, len(due) == limit, None if oldest is None else float(oldest))
