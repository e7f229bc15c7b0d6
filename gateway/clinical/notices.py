"""Timed notices: the texts the clinical parts ask to be sent at a time.

A reminder 24 h before an appointment, "your appointment moved" after the cancel
debounce, "your results are available", a medication dose: each is a row in
`clinical_notices` with its template, purpose, due time and encrypted variables. The
part that plans it inserts it with `schedule` and withdraws it with `close_pending`;
one runner (`gateway.templates`' sender) claims the due rows, asks the kind's
registered `Recheck` whether it should still go (the appointment still booked at the
same time, the medication not stopped), renders the template in the contact's
language and sends it through the application layer, where consent, quiet hours and
caps decide as for any message. Every state change leaves `pending` exactly once
(`UPDATE ... WHERE state = 'pending'`), so a notice is never sent twice.
"""

from __future__ import annotations

import enum
import json
import secrets
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.store.crypto import FieldCipher


class NoticeKind(enum.StrEnum):
    REMINDER = "reminder"
    APPOINTMENT_MOVED = "appointment_moved"
    APPOINTMENT_CANCELLED = "appointment_cancelled"
    RESULT_AVAILABLE = "result_available"
    MEDICATION_READY = "medication_ready"
    MEDICATION_DOSE = "medication_dose"


class NoticeState(enum.StrEnum):
    PENDING = "pending"
    QUEUED = "queued"  # handed to the queue as message `message_id`
    SKIPPED = "skipped"  # its recheck said no at send time (`reason`)
    CANCELLED = "cancelled"  # withdrawn before it was due (`reason`)
    SUPERSEDED = "superseded"  # replaced by a re-plan


@dataclass(frozen=True, slots=True)
class Notice:
    """A notice to plan. `variables` fill the template and are stored encrypted (they
    may name a clinic or provider); `ref` says what it is about without PHI (a rule
    or schedule id). `priority`: a class name, or None for the purpose's default."""

    kind: NoticeKind
    contact_idx: bytes
    template: str
    purpose: str
    due_at: float
    variables: Mapping[str, str] = field(default_factory=dict)
    language: str | None = None
    expires_at: float | None = None
    patient_id: str | None = None
    appointment_id: str | None = None
    appt_version: int | None = None
    rule_id: str | None = None
    rule_version: int | None = None
    variant: str | None = None
    ref: str | None = None
    priority: str | None = None


@dataclass(frozen=True, slots=True)
class NoticeRow:
    id: str
    notice: Notice
    state: NoticeState
    reason: str | None
    message_id: str | None


_COLUMNS = (
    "id, kind, contact_idx, template, purpose, due_at, variables_ct, language, expires_at,"
    " patient_id, appointment_id, appt_version, rule_id, rule_version, variant, ref, priority,"
    " state, reason, message_id"
)

# kind -> the send-time check: None to send, else the reason it is skipped (no PHI).
Recheck = Callable[[sqlite3.Connection, NoticeRow, float], str | None]
_RECHECKS: dict[NoticeKind, Recheck] = {}


def register_recheck(kind: NoticeKind, check: Recheck) -> None:
    _RECHECKS[kind] = check


def recheck(conn: sqlite3.Connection, row: NoticeRow, now: float) -> str | None:
    check = _RECHECKS.get(row.notice.kind)
    return None if check is None else check(conn, row, now)


_planned = 0  # notices scheduled in this process; see planned()


def planned() -> int:
    """How many notices `schedule` has inserted in this process. The notice runner
    compares it after each commit and makes a pass when it grew: a part that plans a
    notice (results, medication, the cancel debounce) need not know the runner."""
    return _planned


def schedule(conn: sqlite3.Connection, cipher: FieldCipher, notice: Notice, now: float) -> str:
    """Insert a pending notice; returns its id. A second pending notice for the same
    appointment and rule raises `sqlite3.IntegrityError` (re-plan: close first)."""
    global _planned
    _planned += 1
    notice_id = "ntc_" + secrets.token_hex(8)
    variables = json.dumps(dict(notice.variables), sort_keys=True)
    conn.execute(
        f"INSERT INTO clinical_notices ({_COLUMNS}, created_at, updated_at)"  # noqa: S608
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            notice_id,
            notice.kind.value,
            notice.contact_idx,
            notice.template,
            notice.purpose,
            notice.due_at,
            cipher.encrypt(variables, notice_id, "variables"),
            notice.language,
            notice.expires_at,
            notice.patient_id,
            notice.appointment_id,
            notice.appt_version,
            notice.rule_id,
            notice.rule_version,
            notice.variant,
            notice.ref,
            notice.priority,
            NoticeState.PENDING.value,
            None,
            None,
            now,
            now,
        ),
    )
    return notice_id


def close_pending(
    conn: sqlite3.Connection,
    now: float,
    state: NoticeState,
    reason: str,
    *,
    appointment_id: str | None = None,
    patient_id: str | None = None,
    ref: str | None = None,
    kinds: tuple[NoticeKind, ...] = (),
    rule_id: str | None = None,
) -> list[str]:
    """Move the matching pending notices to `state` (cancelled, superseded); returns
    their ids. At least one of the keys must be given."""
    where, args = ["state = 'pending'"], []
    for column, v in (
        ("appointment_id", appointment_id),
        ("patient_id", patient_id),
        ("ref", ref),
        ("rule_id", rule_id),
    ):
        if v is not None:
            where.append(f"{column} = ?")
            args.append(v)
    if len(where) == 1:
        raise ValueError("close_pending needs an appointment, patient, ref or rule")
    if kinds:
        where.append(f"kind IN ({','.join('?' * len(kinds))})")
        args.extend(k.value for k in kinds)
    rows = conn.execute(
        "UPDATE clinical_notices SET state = ?, reason = ?, updated_at = ?"  # noqa: S608
        f" WHERE {' AND '.join(where)} RETURNING id",
        (state.value, reason, now, *args),
    ).fetchall()
    return [r[0] for r in rows]


def finish(
    conn: sqlite3.Connection,
    notice_id: str,
    state: NoticeState,
    now: float,
    *,
    reason: str | None = None,
    message_id: str | None = None,
) -> bool:
    """Leave `pending` for `state`; False if it already left (another runner, a
    re-plan): the caller must then not send."""
    r = conn.execute(
        "UPDATE clinical_notices SET state = ?, reason = ?, message_id = ?, updated_at = ?"
        " WHERE id = ? AND state = 'pending' RETURNING id",
        (state.value, reason, message_id, now, notice_id),
    ).fetchone()
    return r is not None


def due(
    conn: sqlite3.Connection, cipher: FieldCipher, now: float, limit: int, *, claim: bool = False
) -> list[NoticeRow]:
    """Pending notices due by `now`, earliest first. `claim` (PostgreSQL only: a
    cluster's runners) locks them for this transaction and passes over the ones
    another node's pass holds, so each is sent by one node."""
    lock = " FOR UPDATE SKIP LOCKED" if claim else ""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM clinical_notices"  # noqa: S608
        f" WHERE state = 'pending' AND due_at <= ? ORDER BY due_at, id LIMIT ?{lock}",
        (now, limit),
    ).fetchall()
    return [row_of(cipher, r) for r in rows]


def of_appointment(
    conn: sqlite3.Connection, cipher: FieldCipher, appointment_id: str
) -> list[NoticeRow]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM clinical_notices"  # noqa: S608
        " WHERE appointment_id = ? ORDER BY due_at, id",
        (appointment_id,),
    ).fetchall()
    return [row_of(cipher, r) for r in rows]


def next_due(conn: sqlite3.Connection) -> float | None:
    r = conn.execute("SELECT min(due_at) FROM clinical_notices WHERE state = 'pending'").fetchone()
    return None if r is None or r[0] is None else float(r[0])


def row_of(cipher: FieldCipher, r: tuple[Any, ...] | sqlite3.Row) -> NoticeRow:
    variables = json.loads(cipher.decrypt(r[6], r[0], "variables")) if r[6] else {}
    notice = Notice(
        kind=NoticeKind(r[1]),
        contact_idx=r[2],
        template=r[3],
        purpose=r[4],
        due_at=r[5],
        variables=variables,
        language=r[7],
        expires_at=r[8],
        patient_id=r[9],
        appointment_id=r[10],
        appt_version=r[11],
        rule_id=r[12],
        rule_version=r[13],
        variant=r[14],
        ref=r[15],
        priority=r[16],
    )
    return NoticeRow(r[0], notice, NoticeState(r[17]), r[18], r[19])
