"""The `hl7_messages` table: SQL only, run inside the writer's transaction or on a
reader. A row is keyed by (interface, sending application, sending facility, control
id); the message text is encrypted under the row id; the ACK is stored as sent (MSH
ids, codes and our own error texts only: no PHI)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.store.crypto import FieldCipher

STATES = ("mapped", "ignored", "quarantined", "rejected")


@dataclass(frozen=True, slots=True)
class Existing:
    id: str
    state: str
    ack: str


@dataclass(frozen=True, slots=True)
class Row:
    """What a new or re-run message is stored as."""

    id: str
    interface: str
    sending_app: str
    sending_facility: str
    control_id: str
    msg_type: str
    event: str
    version: str
    msg_time: str
    charset: str
    charset_flag: str | None
    text: str
    state: str
    error_code: int | None
    error_text: str | None
    error_location: str | None
    ack_code: str | None
    ack: str


def find(
    conn: sqlite3.Connection, interface: str, app: str, facility: str, control_id: str
) -> Existing | None:
    r = conn.execute(
        "SELECT id, state, ack FROM hl7_messages WHERE interface = ? AND sending_app = ?"
        " AND sending_facility = ? AND control_id = ?",
        (interface, app, facility, control_id),
    ).fetchone()
    return None if r is None else Existing(r[0], r[1], r[2])


def count_duplicate(conn: sqlite3.Connection, row_id: str, now: float) -> None:
    conn.execute(
        "UPDATE hl7_messages SET duplicates = duplicates + 1, updated_at = ? WHERE id = ?",
        (now, row_id),
    )


def put(
    conn: sqlite3.Connection, cipher: FieldCipher, row: Row, now: float, *, replaces: bool = True
) -> None:
    """Insert `row`, replacing a rejected one with the same key (a resend after the
    sender fixed its header is a new message, not a duplicate). `replaces=False`: the
    caller found no row with this key in this transaction, so there is none to delete."""
    if replaces:
        conn.execute(
            "DELETE FROM hl7_messages WHERE interface = ? AND sending_app = ?"
            " AND sending_facility = ? AND control_id = ? AND state = 'rejected'",
            (row.interface, row.sending_app, row.sending_facility, row.control_id),
        )
    conn.execute(
        "INSERT INTO hl7_messages (id, interface, sending_app, sending_facility, control_id,"
        " msg_type, event, version, msg_time, charset, charset_flag, raw_ct, state,"
        " error_code, error_text, error_location, ack_code, ack, received_at, updated_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            row.id,
            row.interface,
            row.sending_app,
            row.sending_facility,
            row.control_id,
            row.msg_type,
            row.event,
            row.version,
            row.msg_time,
            row.charset,
            row.charset_flag,
            cipher.encrypt(row.text, row.id, "raw"),
            row.state,
            row.error_code,
            row.error_text,
            row.error_location,
            row.ack_code,
            row.ack,
            now,
            now,
        ),
    )


def claim_quarantined(conn: sqlite3.Connection, row_id: str, now: float) -> bool:
    """Take a quarantined message for reprocessing: one caller wins."""
    r = conn.execute(
        "UPDATE hl7_messages SET reprocessed = reprocessed + 1, updated_at = ?"
        " WHERE id = ? AND state = 'quarantined' RETURNING id",
        (now, row_id),
    ).fetchone()
    return r is not None


def set_state(
    conn: sqlite3.Connection,
    row_id: str,
    state: str,
    error: tuple[int | None, str | None, str | None],
    now: float,
) -> None:
    conn.execute(
        "UPDATE hl7_messages SET state = ?, error_code = ?, error_text = ?,"
        " error_location = ?, updated_at = ? WHERE id = ?",
        (state, *error, now, row_id),
    )


def raw_text(conn: sqlite3.Connection, cipher: FieldCipher, row_id: str) -> tuple[str, str] | None:
    """(interface, message text) of a stored message."""
    r = conn.execute(
        "SELECT interface, raw_ct FROM hl7_messages WHERE id = ?", (row_id,)
    ).fetchone()
    return None if r is None else (r[0], cipher.decrypt(r[1], row_id, "raw"))


@dataclass(frozen=True, slots=True)
class Listed:
    """A stored message as the API and panel show it (no PHI)."""

    id: str
    interface: str
    sending_app: str
    sending_facility: str
    control_id: str
    msg_type: str
    event: str
    version: str
    state: str
    error_code: int | None
    error_text: str | None
    error_location: str | None
    ack_code: str | None
    charset: str
    charset_flag: str | None
    duplicates: int
    reprocessed: int
    received_at: float
    updated_at: float


_LISTED = (
    "id, interface, sending_app, sending_facility, control_id, msg_type, event, version,"
    " state, error_code, error_text, error_location, ack_code, charset, charset_flag,"
    " duplicates, reprocessed, received_at, updated_at"
)


def listed(
    conn: sqlite3.Connection, state: str | None, interface: str | None, limit: int
) -> list[Listed]:
    where, args = [], []
    if state is not None:
        where.append("state = ?")
        args.append(state)
    if interface is not None:
        where.append("interface = ?")
        args.append(interface)
    sql = f"SELECT {_LISTED} FROM hl7_messages"  # noqa: S608  # fixed column list
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY received_at DESC, id LIMIT ?"
    return [Listed(*r) for r in conn.execute(sql, (*args, limit))]


def one(conn: sqlite3.Connection, row_id: str) -> Listed | None:
    r = conn.execute(
        f"SELECT {_LISTED} FROM hl7_messages WHERE id = ?",  # noqa: S608  # fixed columns
        (row_id,),
    ).fetchone()
    return None if r is None else Listed(*r)


COUNTERS = (
    "SELECT interface, state, COUNT(*), SUM(duplicates) FROM hl7_messages GROUP BY interface, state"
)


def counters(rows: Iterable[Sequence[Any]]) -> dict[str, dict[str, int]]:
    """Per interface (the rows of `COUNTERS`): messages per state, and `duplicate`
    (resends answered)."""
    out: dict[str, dict[str, int]] = {}
    for interface, state, n, dups in rows:
        c = out.setdefault(interface, dict.fromkeys((*STATES, "duplicate"), 0))
        c[state] = n
        c["duplicate"] += int(dups or 0)
    return out
