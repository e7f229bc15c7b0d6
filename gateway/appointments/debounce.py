"""Epic's cancel-then-rebook as one "your appointment moved" notice (research §0.2, §H.9).

A cancellation closes the appointment's pending notices at once and holds an
`appointment_cancelled` notice, due after the profile's `cancel_debounce`. A booking,
move or reinstatement of the same patient within the debounce whose start lies within
`rebook_window` of the cancelled one's supersedes the held notice and schedules one
`appointment_moved` notice for the new appointment, due when the held one was (so a
third message within the debounce still changes it). A reinstatement at the same time
only withdraws the held notice. A moved appointment with a moved notice still pending
gets that notice re-planned with the new time.

Send-time rechecks (`notices.register_recheck`): a cancelled notice is skipped if the
appointment is no longer cancelled or the patient was rebooked meanwhile; a moved
notice if its appointment is gone, past, or at another time than the notice says.
"""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING

from gateway.appointments.model import LIVE, Status
from gateway.appointments.variables import notice_variables, start_text
from gateway.clinical import notices
from gateway.clinical.commands import ApplyContext
from gateway.clinical.notices import Notice, NoticeKind, NoticeRow, NoticeState

if TYPE_CHECKING:
    from gateway.appointments.machine import Stored
    from gateway.appointments.settings import Settings

PURPOSE = "appointment"
_LIVE = tuple(s.value for s in LIVE)
_IN_LIVE = f"({','.join('?' * len(_LIVE))})"
_BOOKINGS = ("booked", "created_from_update", "rescheduled", "reinstated")


def variables(conn: sqlite3.Connection, appt: Stored) -> dict[str, str]:
    """The templates' variables of an appointment with a start (`notice_variables`)."""
    assert appt.start is not None
    loc = appt.location
    return notice_variables(
        appt.id,
        appt.start,
        _zone(conn, appt.id),
        appt.short_code,
        clinic=loc.clinic if loc else None,
        place=loc.place if loc else None,
        location_code=loc.code if loc else None,
        provider=appt.provider,
        service=appt.service,
    )


def hold_cancellation(conn: sqlite3.Connection, ctx: ApplyContext, appt: Stored) -> str | None:
    """Hold the "cancelled" notice for the debounce; None if the patient has no number."""
    due = ctx.now + ctx.profile.cancel_debounce
    notice = _notice(conn, ctx, appt, NoticeKind.APPOINTMENT_CANCELLED, due)
    return None if notice is None else notices.schedule(conn, ctx.cipher, notice, ctx.now)


def rebooked(
    conn: sqlite3.Connection,
    ctx: ApplyContext,
    settings: Settings,
    appt: Stored,
    *,
    others: bool = True,
) -> str | None:
    """`appt` was booked, moved or reinstated: turn its own held cancellation or
    pending moved notice, and with `others` a held cancellation of another appointment
    of its patient, into one moved notice; returns its id."""
    if appt.start is None:
        return None
    window = settings.rebook_window
    held = conn.execute(
        "SELECT n.id, n.due_at, n.appointment_id, n.variables_ct FROM clinical_notices n"
        " JOIN appointments a ON a.id = n.appointment_id"
        " WHERE n.patient_id = ? AND n.state = 'pending' AND ("
        "  (n.kind = 'appointment_cancelled' AND (a.id = ? OR (? AND a.start_at BETWEEN ? AND ?)))"
        "  OR (n.kind = 'appointment_moved' AND a.id = ?))"
        " ORDER BY n.due_at",
        (appt.patient_id, appt.id, others, appt.start - window, appt.start + window, appt.id),
    ).fetchall()
    if not held:
        return None
    due = max(ctx.now, float(held[0][1]))
    new_start = variables(conn, appt).get("start")
    moved = False
    for notice_id, _, appt_id, variables_ct in held:
        same_time = appt_id == appt.id and _start_of(ctx, notice_id, variables_ct) == new_start
        reason = "reinstated" if same_time else "rebooked"
        notices.finish(conn, notice_id, NoticeState.SUPERSEDED, ctx.now, reason=reason)
        moved = moved or not same_time
    if not moved:
        return None
    notice = _notice(conn, ctx, appt, NoticeKind.APPOINTMENT_MOVED, due)
    return None if notice is None else notices.schedule(conn, ctx.cipher, notice, ctx.now)


def _start_of(ctx: ApplyContext, notice_id: str, ct: bytes | None) -> str | None:
    if not ct:
        return None
    found: str | None = json.loads(ctx.cipher.decrypt(ct, notice_id, "variables")).get("start")
    return found


def _notice(
    conn: sqlite3.Connection, ctx: ApplyContext, appt: Stored, kind: NoticeKind, due: float
) -> Notice | None:
    r = conn.execute(
        "SELECT p.contact_idx, c.language FROM patients p"
        " LEFT JOIN contacts c ON c.idx = p.contact_idx WHERE p.id = ?",
        (appt.patient_id,),
    ).fetchone()
    if r is None or r[0] is None:
        return None
    return Notice(
        kind,
        r[0],
        kind.value,
        PURPOSE,
        due,
        variables(conn, appt),
        language=r[1] or ctx.profile.default_language,
        patient_id=appt.patient_id,
        appointment_id=appt.id,
        appt_version=appt.version,
    )


def _zone(conn: sqlite3.Connection, appt_id: str) -> str:
    r = conn.execute("SELECT time_zone FROM appointments WHERE id = ?", (appt_id,)).fetchone()
    return str(r[0]) if r is not None and r[0] else "UTC"


# -- send-time rechecks ------------------------------------------------------------------


def recheck_cancelled(conn: sqlite3.Connection, row: NoticeRow, now: float) -> str | None:
    a = conn.execute(
        "SELECT status, start_at, patient_id, rebook_window FROM appointments WHERE id = ?",
        (row.notice.appointment_id,),
    ).fetchone()
    if a is None:
        return "appointment_gone"
    if a[0] != Status.CANCELLED.value:
        return "appointment_" + ("reinstated" if a[0] in _LIVE else str(a[0]))
    cancelled_at = conn.execute(
        "SELECT max(at) FROM appointment_events WHERE appointment_id = ? AND event = 'cancelled'",
        (row.notice.appointment_id,),
    ).fetchone()[0]
    if a[1] is None or cancelled_at is None:
        return None
    window = float(a[3] or 0.0)
    rebooking = conn.execute(
        "SELECT 1 FROM appointments b JOIN appointment_events e ON e.appointment_id = b.id"  # noqa: S608
        f" WHERE b.patient_id = ? AND b.id != ? AND b.status IN {_IN_LIVE}"
        " AND b.start_at BETWEEN ? AND ? AND e.at >= ?"
        f" AND e.event IN ({','.join('?' * len(_BOOKINGS))}) LIMIT 1",
        (
            a[2],
            row.notice.appointment_id,
            *_LIVE,
            a[1] - window,
            a[1] + window,
            cancelled_at,
            *_BOOKINGS,
        ),
    ).fetchone()
    return "rebooked" if rebooking else None


def recheck_moved(conn: sqlite3.Connection, row: NoticeRow, now: float) -> str | None:
    a = conn.execute(
        "SELECT status, start_at, time_zone FROM appointments WHERE id = ?",
        (row.notice.appointment_id,),
    ).fetchone()
    if a is None or a[0] not in _LIVE:
        return "appointment_gone"
    if a[1] is None or a[1] <= now:
        return "appointment_past"
    if row.notice.variables.get("start") != start_text(a[1], a[2]):
        return "appointment_changed"
    return None


notices.register_recheck(NoticeKind.APPOINTMENT_CANCELLED, recheck_cancelled)
notices.register_recheck(NoticeKind.APPOINTMENT_MOVED, recheck_moved)
