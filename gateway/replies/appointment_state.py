"""The two appointment changes a reply may make: confirmed, and (where a site allows
it) cancelled by the patient.

The appointment state machine belongs to `gateway.appointments`; these are the
minimal updates a reply needs, done the same way (lead: fold them into that state
machine at the merge): the version bumps, the change trail gets a row without PHI,
and `ctx.hooks.changed` runs so the reminder planner re-plans, all in the caller's
transaction. A cancel also withdraws the appointment's pending notices.
"""

from __future__ import annotations

import sqlite3

from gateway.clinical import notices
from gateway.clinical.commands import ApplyContext
from gateway.clinical.notices import NoticeState

CANCELLED = "cancelled"


def _event(
    conn: sqlite3.Connection,
    ctx: ApplyContext,
    appointment_id: str,
    event: str,
    old: tuple[str, float | None],
    new_status: str,
    version: int,
    ref: str,
) -> None:
    conn.execute(
        "INSERT INTO appointment_events (appointment_id, at, event, source_ref, old_status,"
        " new_status, old_start, new_start, version) VALUES (?,?,?,?,?,?,?,?,?)",
        (appointment_id, ctx.now, event, ref, old[0], new_status, old[1], old[1], version),
    )


def confirm(
    conn: sqlite3.Connection, ctx: ApplyContext, appointment_id: str, via: str, ref: str
) -> int | None:
    """Mark the appointment confirmed (`via`: how, e.g. `sms`; `ref`: the inbound id);
    its version (bumped only by the first confirmation), or None if it is gone."""
    row = conn.execute(
        "UPDATE appointments SET confirmed_at = ?, confirmed_via = ?, version = version + 1,"
        " updated_at = ? WHERE id = ? AND confirmed_at IS NULL RETURNING version, status,"
        " start_at",
        (ctx.now, via, ctx.now, appointment_id),
    ).fetchone()
    if row is None:
        again = conn.execute(
            "SELECT version FROM appointments WHERE id = ?", (appointment_id,)
        ).fetchone()
        return None if again is None else int(again[0])
    version, status, start = row
    _event(conn, ctx, appointment_id, "confirmed", (status, start), status, version, ref)
    ctx.hooks.changed(conn, ctx, appointment_id)
    return int(version)


def cancel(
    conn: sqlite3.Connection, ctx: ApplyContext, appointment_id: str, ref: str
) -> int | None:
    """Cancel the appointment at the patient's request: its new version, or None if it
    was already cancelled or is gone."""
    before = conn.execute(
        "SELECT status, start_at FROM appointments WHERE id = ?", (appointment_id,)
    ).fetchone()
    row = conn.execute(
        "UPDATE appointments SET status = ?, version = version + 1, last_event = ?,"
        " updated_at = ? WHERE id = ? AND status != ? RETURNING version",
        (CANCELLED, "patient_cancel", ctx.now, appointment_id, CANCELLED),
    ).fetchone()
    if row is None or before is None:
        return None
    version = int(row[0])
    _event(
        conn, ctx, appointment_id, "patient_cancel", (before[0], before[1]), CANCELLED, version, ref
    )
    notices.close_pending(
        conn, ctx.now, NoticeState.CANCELLED, "patient_cancel", appointment_id=appointment_id
    )
    ctx.hooks.changed(conn, ctx, appointment_id)
    return version
