"""The `appointment_replies` rows: every reply, and the open ones as staff's worklist.

A reply is `open` when staff must act: a reschedule or cancel request with no
write-back to carry it to the EHR, and replies that matched no appointment
(`unmatched`) or were no intent at all (`unclear`). Resolving is one UPDATE that
leaves `open` at most once (parallel clicks: one wins).
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

from gateway.integrations.events import APPOINTMENT_REPLY
from gateway.store.outbox_sql import INSERT_ROW as OUTBOX_ROW

ReplyState = Literal["done", "open", "resolved"]
RESOLUTIONS = ("handled", "dismissed")


@dataclass(frozen=True, slots=True)
class NewReply:
    inbound_id: str
    contact_idx: bytes
    appointment_id: str | None
    intent: str
    by_code: bool
    outcome: str
    state: ReplyState
    at: float


@dataclass(frozen=True, slots=True)
class ReplyRow:
    id: str
    inbound_id: str
    contact_idx: bytes
    appointment_id: str | None
    intent: str
    by_code: bool
    outcome: str
    writeback_id: str | None
    state: str
    created_at: float
    resolved_at: float | None
    resolved_by: str | None
    resolution: str | None


COLUMNS = (
    "id, inbound_id, contact_idx, appointment_id, intent, by_code, outcome, writeback_id,"
    " state, created_at, resolved_at, resolved_by, resolution"
)


def new_id() -> str:
    return "rpl_" + secrets.token_hex(8)


def insert(conn: sqlite3.Connection, reply_id: str, r: NewReply, writeback_id: str | None) -> None:
    """The reply's row and its `appointment.reply` event (ids, intent and outcome only)."""
    conn.execute(
        f"INSERT INTO appointment_replies ({COLUMNS})"  # noqa: S608 - a constant
        " VALUES (?,?,?,?,?,?,?,?,?,?,NULL,NULL,NULL)",
        (
            reply_id,
            r.inbound_id,
            r.contact_idx,
            r.appointment_id,
            r.intent,
            int(r.by_code),
            r.outcome,
            writeback_id,
            r.state,
            r.at,
        ),
    )
    conn.execute(
        OUTBOX_ROW, (APPOINTMENT_REPLY, r.at, reply_id, r.appointment_id, r.intent, r.outcome, None)
    )


def row_of(r: Any) -> ReplyRow:
    values = list(r)
    values[2] = bytes(values[2])
    values[5] = bool(values[5])
    return ReplyRow(*values)


def listed(state: str | None, limit: int) -> tuple[str, tuple[Any, ...]]:
    """The query for replies in `state` (None: all): open ones oldest first (a
    worklist), else newest first."""
    if state is None:
        sql = f"SELECT {COLUMNS} FROM appointment_replies ORDER BY created_at DESC LIMIT ?"  # noqa: S608
        return sql, (limit,)
    order = "ASC" if state == "open" else "DESC"
    sql = (
        f"SELECT {COLUMNS} FROM appointment_replies WHERE state = ?"  # noqa: S608
        f" ORDER BY created_at {order} LIMIT ?"
    )
    return sql, (state, limit)


def of_appointment(appointment_id: str) -> tuple[str, tuple[Any, ...]]:
    """The query for an appointment's replies, oldest first."""
    sql = (
        f"SELECT {COLUMNS} FROM appointment_replies WHERE appointment_id = ?"  # noqa: S608
        " ORDER BY created_at, id"
    )
    return sql, (appointment_id,)


def one(conn: sqlite3.Connection, reply_id: str) -> ReplyRow | None:
    r = conn.execute(
        f"SELECT {COLUMNS} FROM appointment_replies WHERE id = ?",  # noqa: S608 - a constant
        (reply_id,),
    ).fetchone()
    return None if r is None else row_of(r)


def resolve(
    conn: sqlite3.Connection, reply_id: str, resolution: str, actor: str, now: float
) -> bool:
    """Leave `open` for `resolved`; False if it was not open (already resolved, or never
    on the worklist)."""
    r = conn.execute(
        "UPDATE appointment_replies SET state = 'resolved', resolved_at = ?, resolved_by = ?,"
        " resolution = ? WHERE id = ? AND state = 'open' RETURNING id",
        (now, actor, resolution, reply_id),
    ).fetchone()
    return r is not None
