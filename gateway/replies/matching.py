"""Which appointment a reply is about, read in the inbound's transaction.

Without a code: the appointment of this number that was most recently reminded (a
`reminder` notice handed to the queue as a message that was not blocked, cancelled or
expired) and that is still ahead and live. With a code: that number's patient's live
appointment carrying the short code (reminded ones first, then the soonest). A reply
that matches none is not guessed at: the caller puts it on the worklist.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

# Appointment statuses (FHIR codes, as the appointments part stores them) a reply can
# no longer act on.
DONE_STATUSES = ("cancelled", "noshow", "entered-in-error", "fulfilled")
_DONE = ",".join(f"'{s}'" for s in DONE_STATUSES)


@dataclass(frozen=True, slots=True)
class Matched:
    id: str
    source: str
    patient_id: str
    status: str
    start_at: float | None
    version: int


_COLUMNS = "a.id, a.source, a.patient_id, a.status, a.start_at, a.version"

_LATEST_REMINDED = (
    f"SELECT {_COLUMNS} FROM clinical_notices n"  # noqa: S608 - constants only
    " JOIN appointments a ON a.id = n.appointment_id"
    " JOIN messages m ON m.id = n.message_id"
    " WHERE n.contact_idx = ? AND n.kind = 'reminder' AND n.state = 'queued'"
    " AND m.state NOT IN ('blocked', 'cancelled', 'expired')"
    f" AND a.status NOT IN ({_DONE}) AND (a.start_at IS NULL OR a.start_at > ?)"
    " ORDER BY n.updated_at DESC, n.id DESC LIMIT 1"
)

_BY_CODE = (
    f"SELECT {_COLUMNS} FROM appointments a JOIN patients p ON p.id = a.patient_id"  # noqa: S608 - constants only
    " WHERE p.contact_idx = ? AND a.short_code = ?"
    f" AND a.status NOT IN ({_DONE}) AND (a.start_at IS NULL OR a.start_at > ?)"
    " ORDER BY EXISTS (SELECT 1 FROM clinical_notices n WHERE n.appointment_id = a.id"
    " AND n.kind = 'reminder' AND n.state = 'queued') DESC, a.start_at LIMIT 1"
)


def _row(r: Any) -> Matched | None:
    if r is None:
        return None
    return Matched(r[0], r[1], r[2], r[3], r[4], int(r[5]))


def latest_reminded(conn: sqlite3.Connection, contact_idx: bytes, now: float) -> Matched | None:
    return _row(conn.execute(_LATEST_REMINDED, (contact_idx, now)).fetchone())


def by_code(conn: sqlite3.Connection, contact_idx: bytes, code: str, now: float) -> Matched | None:
    return _row(conn.execute(_BY_CODE, (contact_idx, code, now)).fetchone())


def find(
    conn: sqlite3.Connection, contact_idx: bytes, code: str | None, now: float
) -> Matched | None:
    if code is not None:
        return by_code(conn, contact_idx, code, now)
    return latest_reminded(conn, contact_idx, now)
