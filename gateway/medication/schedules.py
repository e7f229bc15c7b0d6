"""Medication schedules in the store, and the dose notices planned from them.

A schedule (times of day in a zone, from a start to an end date) is planned ahead
over a bounded horizon: `plan` schedules the MEDICATION_DOSE notices whose time falls
in [planned_until, now + horizon) and moves `planned_until` on, so every dose is
planned exactly once however often `plan` runs (the top-up job calls it for every
active schedule; a change re-plans from now after superseding what was pending). A
partial unique index refuses a second live notice for one schedule and time.

Stopping (a discontinue order, `DELETE /medications/{id}`) closes the pending dose
notices as cancelled in the same transaction. At send time the MEDICATION_DOSE
recheck wants the schedule still active and the dose not older than the grace.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from gateway.clinical import notices
from gateway.clinical.notices import Notice, NoticeKind, NoticeRow, NoticeState
from gateway.consent.purposes import Purpose
from gateway.medication.timing import DoseSchedule, doses, ended_by
from gateway.results.settings import Settings
from gateway.store.crypto import FieldCipher

TEMPLATE = NoticeKind.MEDICATION_DOSE.value
_COLUMNS = (
    "id, source, patient_id, contact_idx, times, time_zone, start_date, end_date, label_ct,"
    " language, state, version, planned_until, stopped_at, stop_reason, created_by,"
    " created_at, updated_at"
)


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    id: str
    source: str
    patient_id: str | None
    contact_idx: bytes
    dose: DoseSchedule
    has_label: bool
    language: str | None
    state: str  # active | stopped | ended
    version: int
    planned_until: float
    stopped_at: float | None
    stop_reason: str | None
    created_by: str
    created_at: float
    updated_at: float


def _row(r: Any) -> ScheduleRow:
    end = r[7]
    return ScheduleRow(
        id=str(r[0]),
        source=str(r[1]),
        patient_id=None if r[2] is None else str(r[2]),
        contact_idx=bytes(r[3]),
        dose=DoseSchedule(
            tuple(str(r[4]).split(",")),
            str(r[5]),
            dt.date.fromisoformat(str(r[6])),
            None if end is None else dt.date.fromisoformat(str(end)),
        ),
        has_label=r[8] is not None,
        language=None if r[9] is None else str(r[9]),
        state=str(r[10]),
        version=int(r[11]),
        planned_until=float(r[12]),
        stopped_at=None if r[13] is None else float(r[13]),
        stop_reason=None if r[14] is None else str(r[14]),
        created_by=str(r[15]),
        created_at=float(r[16]),
        updated_at=float(r[17]),
    )


def get(conn: sqlite3.Connection, schedule_id: str) -> ScheduleRow | None:
    r = conn.execute(
        f"SELECT {_COLUMNS} FROM medication_schedules WHERE id = ?",  # noqa: S608
        (schedule_id,),
    ).fetchone()
    return None if r is None else _row(r)


def by_order(conn: sqlite3.Connection, source: str, ext_index: bytes) -> ScheduleRow | None:
    r = conn.execute(
        f"SELECT {_COLUMNS} FROM medication_schedules"  # noqa: S608
        " WHERE source = ? AND ext_index = ?",
        (source, ext_index),
    ).fetchone()
    return None if r is None else _row(r)


def page(
    conn: sqlite3.Connection, *, state: str | None, before: str | None, limit: int
) -> list[ScheduleRow]:
    """Newest first (ids are random, so `created_at, id` orders them)."""
    where, args = ["1 = 1"], []
    if state is not None:
        where.append("state = ?")
        args.append(state)
    if before is not None:
        where.append(
            "(created_at, id) < (SELECT created_at, id FROM medication_schedules WHERE id = ?)"
        )
        args.append(before)
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM medication_schedules WHERE {' AND '.join(where)}"  # noqa: S608
        " ORDER BY created_at DESC, id DESC LIMIT ?",
        (*args, limit),
    ).fetchall()
    return [_row(r) for r in rows]


@dataclass(frozen=True, slots=True)
class NewSchedule:
    source: str
    ext_index: bytes | None
    patient_id: str | None
    contact_idx: bytes
    dose: DoseSchedule
    label: str | None  # stored only if the site allows drug names
    language: str | None
    actor: str


def insert(conn: sqlite3.Connection, cipher: FieldCipher, new: NewSchedule, now: float) -> str:
    schedule_id = "med_" + secrets.token_hex(8)
    conn.execute(
        "INSERT INTO medication_schedules (id, source, ext_index, patient_id, contact_idx,"
        " times, time_zone, start_date, end_date, label_ct, language, state, version,"
        " planned_until, created_by, created_at, updated_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,'active',1,?,?,?,?)",
        (
            schedule_id,
            new.source,
            new.ext_index,
            *_columns(cipher, schedule_id, new),
            now,
            new.actor,
            now,
            now,
        ),
    )
    return schedule_id


def _columns(cipher: FieldCipher, schedule_id: str, new: NewSchedule) -> tuple[Any, ...]:
    """patient_id .. language, as both the insert and a replacement write them."""
    return (
        new.patient_id,
        new.contact_idx,
        ",".join(new.dose.times),
        new.dose.time_zone,
        new.dose.start.isoformat(),
        None if new.dose.end is None else new.dose.end.isoformat(),
        None if new.label is None else cipher.encrypt(new.label, schedule_id, "label"),
        new.language,
    )


def replace(
    conn: sqlite3.Connection, cipher: FieldCipher, schedule_id: str, new: NewSchedule, now: float
) -> None:
    """A changed order: what was pending is superseded, the schedule (active again if it
    had ended: its end may have moved) re-planned from now."""
    notices.close_pending(
        conn,
        now,
        NoticeState.SUPERSEDED,
        "schedule_changed",
        ref=schedule_id,
        kinds=(NoticeKind.MEDICATION_DOSE,),
    )
    conn.execute(
        "UPDATE medication_schedules SET patient_id = ?, contact_idx = ?, times = ?,"
        " time_zone = ?, start_date = ?, end_date = ?, label_ct = ?, language = ?,"
        " state = 'active', version = version + 1, planned_until = ?, updated_at = ?"
        " WHERE id = ?",
        (
            *_columns(cipher, schedule_id, new),
            now,
            now,
            schedule_id,
        ),
    )


def stop(conn: sqlite3.Connection, schedule_id: str, reason: str, now: float) -> bool:
    """Stop a schedule and cancel its pending doses; False if it was already stopped."""
    done = conn.execute(
        "UPDATE medication_schedules SET state = 'stopped', stopped_at = ?, stop_reason = ?,"
        " updated_at = ? WHERE id = ? AND state != 'stopped' RETURNING id",
        (now, reason, now, schedule_id),
    ).fetchone()
    if done is None:
        return False
    notices.close_pending(
        conn,
        now,
        NoticeState.CANCELLED,
        reason,
        ref=schedule_id,
        kinds=(NoticeKind.MEDICATION_DOSE,),
    )
    return True


def plan(
    conn: sqlite3.Connection,
    cipher: FieldCipher,
    schedule_id: str,
    now: float,
    settings: Settings,
) -> int:
    """Plan the doses of an active schedule up to the horizon; returns how many."""
    row = get(conn, schedule_id)
    if row is None or row.state != "active":
        return 0
    med = settings.medication
    hi = now + med.plan_ahead_hours * 3600.0
    lo = max(row.planned_until, now)
    label = None
    if med.allow_drug_names and row.has_label:
        r = conn.execute("SELECT label_ct FROM medication_schedules WHERE id = ?", (row.id,))
        label = cipher.decrypt(r.fetchone()[0], row.id, "label")
    zone = ZoneInfo(row.dose.time_zone)
    planned = 0
    for at, _ in doses(row.dose, lo, hi):
        variables = {
            "dose_at": dt.datetime.fromtimestamp(at, zone).isoformat(),
            "time_zone": row.dose.time_zone,
        }
        if label is not None:
            variables["medication"] = label
        notices.schedule(
            conn,
            cipher,
            Notice(
                NoticeKind.MEDICATION_DOSE,
                row.contact_idx,
                TEMPLATE,
                Purpose.MEDICATION.value,
                at,
                variables,
                language=row.language,
                expires_at=at + med.dose_grace_minutes * 60.0,
                patient_id=row.patient_id,
                ref=row.id,
            ),
            now,
        )
        planned += 1
    state = "ended" if ended_by(row.dose, hi) else "active"
    conn.execute(
        "UPDATE medication_schedules SET planned_until = ?, state = ? WHERE id = ?",
        (max(hi, row.planned_until), state, row.id),
    )
    return planned


def top_up(conn: sqlite3.Connection, cipher: FieldCipher, now: float, settings: Settings) -> int:
    """Plan every active schedule up to the horizon (the periodic job); returns how many
    dose notices it planned."""
    horizon = now + settings.medication.plan_ahead_hours * 3600.0
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM medication_schedules WHERE state = 'active' AND planned_until < ?",
            (horizon,),
        )
    ]
    return sum(plan(conn, cipher, i, now, settings) for i in ids)


def dose_notices(
    conn: sqlite3.Connection, cipher: FieldCipher, schedule_id: str, limit: int = 200
) -> list[NoticeRow]:
    rows = conn.execute(
        "SELECT id, kind, contact_idx, template, purpose, due_at, variables_ct, language,"
        " expires_at, patient_id, appointment_id, appt_version, rule_id, rule_version, variant,"
        " ref, priority, state, reason, message_id FROM clinical_notices"
        " WHERE ref = ? AND kind = ? ORDER BY due_at, id LIMIT ?",
        (schedule_id, NoticeKind.MEDICATION_DOSE.value, limit),
    ).fetchall()
    return [notices.row_of(cipher, r) for r in rows]


def recheck_dose(conn: sqlite3.Connection, row: NoticeRow, now: float) -> str | None:
    """MEDICATION_DOSE at send time: the schedule still active, the dose not past its
    grace (`expires_at`, set from `[medication] dose_grace_minutes` when planned)."""
    r = conn.execute(
        "SELECT state FROM medication_schedules WHERE id = ?", (row.notice.ref,)
    ).fetchone()
    if r is None or r[0] == "stopped":
        return "schedule_stopped"
    if row.notice.expires_at is not None and now > row.notice.expires_at:
        return "dose_time_passed"
    return None


notices.register_recheck(NoticeKind.MEDICATION_DOSE, recheck_dose)
