"""The reminder planner: an appointment's REMINDER notices, re-planned on every change.

Theory of operation (RapidPro's delete-and-reinsert of campaign fires, research §C1,
§H.7). The planner runs inside the writer transaction that changed the appointment
(`ClinicalHooks.appointment_changed`) or a rule (`replan_rule`), so the appointment,
its notices and the rules are read and written in one step:

1. the appointment's pending REMINDER notices are closed (`superseded`, or
   `cancelled` when it is no longer booked);
2. for a booked appointment with a start and a number, every current active rule
   whose filters match is planned at its due time (`timing.due_at`), unless that time
   is not before the start, the appointment was booked less than the rule's
   `skip_if_booked_within` before its start, or the time has passed;
3. a notice that was already due and not yet sent when the re-plan came keeps its due
   time when the rule still gives the same one (a confirmation arriving a moment
   before the runner must not swallow the reminder).

The unique index on (appointment, rule) over pending notices makes a second pending
notice for one pair impossible, whatever the caller does. At send time the runner asks
`recheck_reminder`: still booked, same start and version, start still ahead, rule
version still current.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

from gateway.appointments.variables import notice_variables
from gateway.clinical import notices
from gateway.clinical.commands import ApplyContext, ClinicalHooks
from gateway.clinical.notices import Notice, NoticeKind, NoticeRow, NoticeState
from gateway.consent.zones import zone
from gateway.reminders import rules
from gateway.reminders.rules import Rule
from gateway.reminders.timing import due_at
from gateway.store.crypto import FieldCipher

# Appointment statuses (FHIR Appointment.status codes, as the appointments part
# stores them) that are reminded.
PLANNABLE = frozenset({"booked"})
KINDS = (NoticeKind.REMINDER,)

# Why a rule gives no notice for an appointment (the preview shows these).
PLANNED = "planned"
PAST = "past"
NOT_BEFORE_START = "not_before_start"
BOOKED_LATE = "booked_late"
FILTERED = "filtered"
INACTIVE = "inactive"


@dataclass(frozen=True, slots=True)
class Appointment:
    """What the planner reads of an appointment (provider and label decrypted)."""

    id: str
    patient_id: str
    contact_idx: bytes | None
    language: str | None
    status: str
    start_at: float | None
    version: int
    time_zone: str
    service: str | None
    location_code: str | None
    appt_type: str | None
    booked_at: float
    short_code: str
    clinic: str | None  # the location's clinic and place (the label, decrypted)
    place: str | None
    provider: str | None


_SELECT = (
    "SELECT a.id, a.patient_id, p.contact_idx, c.language, a.status, a.start_at, a.version,"
    " coalesce(a.time_zone, c.time_zone), a.service, a.location_code, a.appt_type,"
    " a.created_at, a.short_code, a.location_label_ct, a.provider_ct"
    " FROM appointments a JOIN patients p ON p.id = a.patient_id"
    " LEFT JOIN contacts c ON c.idx = p.contact_idx"
)


def load(conn: sqlite3.Connection, cipher: FieldCipher, appointment_id: str) -> Appointment | None:
    r = conn.execute(_SELECT + " WHERE a.id = ?", (appointment_id,)).fetchone()
    return None if r is None else _appointment(cipher, r)


def upcoming(conn: sqlite3.Connection, cipher: FieldCipher, now: float) -> list[Appointment]:
    """Booked appointments still ahead (a rule's re-plan walks these)."""
    marks = ",".join("?" * len(PLANNABLE))
    rows = conn.execute(
        _SELECT + f" WHERE a.start_at > ? AND a.status IN ({marks}) ORDER BY a.start_at",
        (now, *sorted(PLANNABLE)),
    ).fetchall()
    return [_appointment(cipher, r) for r in rows]


def _appointment(cipher: FieldCipher, r: Any) -> Appointment:
    # As the appointments part seals them: the label as JSON {"clinic", "place"} under
    # "location", the provider under "provider", each with the appointment's id.
    appt_id = str(r[0])
    label = json.loads(cipher.decrypt(r[13], appt_id, "location")) if r[13] else {}
    provider = None if r[14] is None else cipher.decrypt(r[14], appt_id, "provider")
    return Appointment(
        id=appt_id,
        patient_id=str(r[1]),
        contact_idx=r[2],
        language=r[3],
        status=str(r[4]),
        start_at=None if r[5] is None else float(r[5]),
        version=int(r[6]),
        time_zone=str(r[7] or "UTC"),
        service=r[8],
        location_code=r[9],
        appt_type=r[10],
        booked_at=float(r[11]),
        short_code=str(r[12]),
        clinic=label.get("clinic"),
        place=label.get("place"),
        provider=provider,
    )


def variables(appt: Appointment) -> dict[str, str]:
    """What the template may use: the appointments' one builder (`notice_variables`)."""
    assert appt.start_at is not None
    return notice_variables(
        appt.id,
        appt.start_at,
        appt.time_zone,
        appt.short_code,
        clinic=appt.clinic,
        place=appt.place,
        location_code=appt.location_code,
        provider=appt.provider,
        service=appt.service,
    )


def verdict(
    rule: Rule, appt: Appointment, now: float, keep_due: float | None = None
) -> tuple[str, float | None]:
    """(PLANNED or why not, the due time if there is one) for `rule` and `appt`."""
    if not rule.spec.active:
        return INACTIVE, None
    if not rule.matches(appt.service, appt.location_code, appt.appt_type):
        return FILTERED, None
    assert appt.start_at is not None
    due = due_at(appt.start_at, zone(appt.time_zone), rule.lead, rule.delivery)
    if due >= appt.start_at:
        return NOT_BEFORE_START, due
    if rule.skip_within and appt.start_at - appt.booked_at < rule.skip_within:
        return BOOKED_LATE, due
    if due <= now and due != keep_due:
        return PAST, due
    return PLANNED, due


def _unplannable(appt: Appointment | None) -> str | None:
    """Why an appointment gets no reminders (its pending ones are cancelled), or None."""
    if appt is None:
        return "appointment_gone"
    if appt.status not in PLANNABLE:
        return "not_booked"
    if appt.start_at is None:
        return "no_start"
    if appt.contact_idx is None:
        return "no_number"
    return None


def _overdue(conn: sqlite3.Connection, now: float, **key: str) -> dict[tuple[str, str], float]:
    """(appointment, rule) -> due time of pending reminders already due (rule 3)."""
    column, value = next(iter(key.items()))
    rows = conn.execute(
        f"SELECT appointment_id, rule_id, due_at FROM clinical_notices WHERE {column} = ?"  # noqa: S608
        " AND state = 'pending' AND kind = ? AND due_at <= ? AND rule_id IS NOT NULL",
        (value, NoticeKind.REMINDER.value, now),
    ).fetchall()
    return {(r[0], r[1]): float(r[2]) for r in rows}


def _schedule(
    conn: sqlite3.Connection,
    cipher: FieldCipher,
    rule: Rule,
    appt: Appointment,
    due: float,
    now: float,
    values: dict[str, str],
) -> str:
    assert appt.start_at is not None and appt.contact_idx is not None
    notice = Notice(
        kind=NoticeKind.REMINDER,
        contact_idx=appt.contact_idx,
        template=rule.spec.template,
        purpose=rule.spec.purpose,
        due_at=due,
        variables=values,
        language=appt.language,
        expires_at=appt.start_at,
        patient_id=appt.patient_id,
        appointment_id=appt.id,
        appt_version=appt.version,
        rule_id=rule.id,
        rule_version=rule.version,
        variant=rule.variant_for(appt.id),
        ref=f"{rule.id}:{rule.version}",
        priority=rule.spec.priority,
    )
    return notices.schedule(conn, cipher, notice, now)


class Planner:
    """The planner bound to the gateway's notice runner's bell (rung when it plans)."""

    def __init__(self, bell: threading.Event | None = None) -> None:
        self._bell = bell

    def install(self, hooks: ClinicalHooks) -> None:
        hooks.appointment_changed.append(self.appointment_changed)
        notices.register_recheck(NoticeKind.REMINDER, recheck_reminder)

    def appointment_changed(
        self, conn: sqlite3.Connection, ctx: ApplyContext, appointment_id: str
    ) -> None:
        self.replan_appointment(conn, ctx.cipher, appointment_id, ctx.now)

    def replan_appointment(
        self, conn: sqlite3.Connection, cipher: FieldCipher, appointment_id: str, now: float
    ) -> list[str]:
        """Steps 1-3 for one appointment; the ids of the notices planned."""
        appt = load(conn, cipher, appointment_id)
        why = _unplannable(appt)
        if why is not None:
            notices.close_pending(
                conn, now, NoticeState.CANCELLED, why, appointment_id=appointment_id, kinds=KINDS
            )
            return []
        assert appt is not None and appt.start_at is not None
        pending = conn.execute(
            "SELECT rule_id, due_at FROM clinical_notices WHERE appointment_id = ?"
            " AND state = 'pending' AND kind = ?",
            (appointment_id, NoticeKind.REMINDER.value),
        ).fetchall()
        overdue = {
            (appt.id, r[0]): float(r[1]) for r in pending if r[0] is not None and r[1] <= now
        }
        if pending:  # a new appointment has none: no UPDATE to run
            notices.close_pending(
                conn,
                now,
                NoticeState.SUPERSEDED,
                "replanned",
                appointment_id=appointment_id,
                kinds=KINDS,
            )
        planned = []
        values = variables(appt)  # the same for every rule
        for rule in rules.current(conn, active_only=True):
            outcome, due = verdict(rule, appt, now, overdue.get((appt.id, rule.id)))
            if outcome == PLANNED and due is not None:
                planned.append(_schedule(conn, cipher, rule, appt, due, now, values))
        self._ring(planned)
        return planned

    def replan_rule(
        self, conn: sqlite3.Connection, cipher: FieldCipher, rule: Rule, now: float
    ) -> list[str]:
        """A new rule or version over every booked appointment still ahead: its pending
        notices re-planned, none for an appointment this rule already reminded at its
        current version (an edited rule does not send the same reminder again)."""
        overdue = _overdue(conn, now, rule_id=rule.id)
        notices.close_pending(
            conn, now, NoticeState.SUPERSEDED, "rule_changed", rule_id=rule.id, kinds=KINDS
        )
        if not rule.spec.active:
            return []
        reminded = {
            (r[0], int(r[1]))
            for r in conn.execute(
                "SELECT appointment_id, appt_version FROM clinical_notices"
                " WHERE rule_id = ? AND state = 'queued'",
                (rule.id,),
            )
        }
        planned = []
        for appt in upcoming(conn, cipher, now):
            if appt.contact_idx is None or (appt.id, appt.version) in reminded:
                continue
            outcome, due = verdict(rule, appt, now, overdue.get((appt.id, rule.id)))
            if outcome == PLANNED and due is not None:
                planned.append(_schedule(conn, cipher, rule, appt, due, now, variables(appt)))
        self._ring(planned)
        return planned

    def _ring(self, planned: list[str]) -> None:
        if planned and self._bell is not None:
            self._bell.set()


def recheck_reminder(conn: sqlite3.Connection, row: NoticeRow, now: float) -> str | None:
    """None if the reminder should still go; else why not (no PHI)."""
    n = row.notice
    r = conn.execute(
        "SELECT status, start_at, version FROM appointments WHERE id = ?", (n.appointment_id,)
    ).fetchone()
    if r is None:
        return "appointment_gone"
    status, start_at, version = r
    if status not in PLANNABLE:
        return "not_booked"
    if version != n.appt_version:
        return "appointment_changed"
    if start_at is None or start_at != n.expires_at:
        return "start_moved"
    if start_at <= now:
        return "start_passed"
    if n.rule_id is not None:
        rule = rules.get(conn, n.rule_id)
        if rule is None or not rule.spec.active or rule.version != n.rule_version:
            return "rule_changed"
    return None
