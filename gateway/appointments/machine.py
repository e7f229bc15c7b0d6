"""The appointment state machine: one change, applied in the writer's transaction.

Theory of operation. Every front end (the SIU mapper, the JSON API, the panel) builds
`Facts` and applies an `AppointmentChange`. `apply` finds the appointment by source and
a keyed index of its external key, then:

1. An update whose `msg_at` is older than the last one applied is stale: only an
   `ignored_stale` event is written (research §H.6); an S17 for an unknown key is
   ignored too (`outcome` says which).
2. The trigger and the stated status decide the new status (table below); an unknown
   key on anything but a booking is upserted from the message and flagged
   `created_from_update` (research §A6.4).
3. Nothing changed: only `last_msg_at` moves. Otherwise the row is written with its
   version bumped, one `appointment_events` row (ids, statuses, times: no PHI), and:
   - leaving the live statuses closes the appointment's pending notices at once;
   - a cancellation (not a deletion, not a discontinuation) holds a "cancelled"
     notice for the debounce (`debounce.hold_cancellation`), if the profile says so;
   - a booking or reschedule (S12, S13, a new appointment) looks for a held
     cancellation of the same patient to turn into one "moved" notice, and any move
     or reinstatement re-plans the appointment's own held notices (`debounce.rebooked`);
   - `ctx.hooks.changed` (the reminder planner) is called.

| trigger      | new status                                                  |
|--------------|-------------------------------------------------------------|
| book (S12), reschedule (S13) | the stated status if live, else booked      |
| modify (S14), upsert (API)   | the stated status, else the stored one (booked if new) |
| cancel (S15) | cancelled     | discontinue (S16) | discontinued            |
| delete (S17) | deleted       | noshow (S26)      | noshow                  |
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway.appointments import debounce
from gateway.appointments.model import LIVE, Facts, Location, Status, Trigger
from gateway.appointments.settings import Settings
from gateway.clinical import lock_names, notices, patients
from gateway.clinical.commands import (
    ERR_APPLICATION_INTERNAL,
    ERR_REQUIRED_FIELD_MISSING,
    ApplyContext,
    LockKey,
    MappingError,
    MoreKeys,
)
from gateway.clinical.notices import NoticeKind, NoticeState

log = structlog.get_logger("smsgw.appointments")

_FIXED: dict[Trigger, Status] = {
    Trigger.CANCEL: Status.CANCELLED,
    Trigger.DISCONTINUE: Status.DISCONTINUED,
    Trigger.DELETE: Status.DELETED,
    Trigger.NOSHOW: Status.NOSHOW,
}
_EVENT_OF: dict[Status, str] = {
    Status.CANCELLED: "cancelled",
    Status.DISCONTINUED: "discontinued",
    Status.DELETED: "deleted",
    Status.NOSHOW: "noshow",
    Status.FULFILLED: "fulfilled",
    Status.CHECKED_IN: "checked_in",
}
_ROW = (
    "id, patient_id, status, start_at, end_at, service, location_code, location_label_ct,"
    " provider_ct, short_code, version, last_msg_at, appt_type"
)


@dataclass(frozen=True, slots=True)
class Stored:
    id: str
    patient_id: str
    status: Status
    start: float | None
    end: float | None
    service: str | None
    location: Location | None
    provider: str | None
    short_code: str
    version: int
    last_msg_at: float | None
    appt_type: str | None = None


@dataclass(slots=True)
class AppointmentChange:
    """A `Command`: apply `facts` to the appointment they name. After `apply`,
    `outcome` is None (applied), `stale`, `unknown_appointment` (an S17 for a key never
    seen) or `unchanged`, and `appointment_id` names the row (None if there is none)."""

    facts: Facts
    outcome: str | None = field(default=None, compare=False)
    appointment_id: str | None = field(default=None, compare=False)
    created: bool = field(default=False, compare=False)

    def lock_keys(self, source: str) -> Sequence[LockKey] | None:
        """The appointment, its patient (the patient's other appointments: short codes,
        a cancel-then-rebook's "moved" notice) and the patient's number (its contact
        row). Without a patient the state machine may read the stored one's rows, which
        no key names: the whole lock. A message moving the appointment from another
        patient needs that patient's keys too, known once the row is read: `apply`
        asks for them (`MoreKeys`) and the job runs again holding all of them."""
        facts = self.facts
        if facts.patient is None:
            return None
        ref = facts.patient.ref
        keys = [("appointment", source, facts.key), ("patient", source, ref.authority, ref.mrn)]
        keys += [("contact", phone.e164) for phone in facts.patient.phones[:1]]
        return keys

    def apply(self, conn: sqlite3.Connection, ctx: ApplyContext) -> None:
        facts = self.facts
        settings = Settings.of(ctx.profile)
        index = ext_index(ctx, facts.key)
        old = load(conn, ctx, index)
        if old is not None and old.last_msg_at is not None and facts.msg_at < old.last_msg_at:
            _event(conn, ctx, old.id, "ignored_stale", old, old.status, old.start, old.version)
            self.outcome, self.appointment_id = "stale", old.id
            return
        if old is None and facts.trigger is Trigger.DELETE:
            self.outcome = "unknown_appointment"
            return
        if old is not None:
            _check_held(conn, ctx, facts, old)
        status = decide(facts, old)
        _cross_check(facts, status)
        if old is None:
            new = _insert(conn, ctx, facts, status, index, settings)
            self.appointment_id, self.created = new.id, True
            created = "booked" if facts.trigger in (Trigger.BOOK, Trigger.UPSERT) else None
            _event(conn, ctx, new.id, created or "created_from_update", None, status, new.start, 1)
            _after(conn, ctx, settings, None, new, facts.trigger)
            return
        self.appointment_id = old.id
        patient_id = old.patient_id
        if facts.patient is not None:
            patient_id = patients.upsert(conn, ctx, facts.patient).id
        new = Stored(
            old.id,
            patient_id,
            status,
            facts.start if facts.start is not None else old.start,
            facts.end if facts.end is not None else (old.end if facts.start is None else None),
            facts.service if facts.service is not None else old.service,
            facts.location if facts.location is not None else old.location,
            facts.provider if facts.provider is not None else old.provider,
            old.short_code,
            old.version + 1,
            facts.msg_at,
            facts.appt_type if facts.appt_type is not None else old.appt_type,
        )
        if _same(old, new):
            conn.execute(
                "UPDATE appointments SET last_msg_at = ?, updated_at = ? WHERE id = ?",
                (facts.msg_at, ctx.now, old.id),
            )
            self.outcome = "unchanged"
            return
        if new.status in LIVE and (old.status not in LIVE or new.patient_id != old.patient_id):
            new = _with_code(new, short_code(conn, new.patient_id, new.id, old.short_code))
        # A confirmation was for the time and booking it answered: a move or a
        # reinstatement asks for a new one.
        unconfirm = new.start != old.start or old.status not in LIVE
        _update(conn, ctx, new, settings, unconfirm=unconfirm)
        name = _event_name(old, new, facts.trigger)
        _event(conn, ctx, new.id, name, old, new.status, new.start, new.version)
        _after(conn, ctx, settings, old, new, facts.trigger)


def _check_held(conn: sqlite3.Connection, ctx: ApplyContext, facts: Facts, old: Stored) -> None:
    """A keyed job moving the appointment to another patient must hold the patient it
    leaves (and that patient's number) too: that patient's notices and short codes
    change. Raises `MoreKeys` (before any write) if it does not."""
    if ctx.held is None or facts.patient is None:
        return
    ref = facts.patient.ref
    named = lock_names.canonical(ctx.cipher, ("patient", ctx.source, ref.authority, ref.mrn))
    leaving = lock_names.stored_patient(conn, old.patient_id)
    if not leaving or leaving[0] == named:  # the same patient: nothing else is touched
        return
    missing = [key for key in leaving if key not in ctx.held]
    if missing:
        raise MoreKeys(missing)


def decide(facts: Facts, old: Stored | None) -> Status:
    fixed = _FIXED.get(facts.trigger)
    if fixed is not None:
        return fixed
    stated = facts.status
    if facts.trigger in (Trigger.BOOK, Trigger.RESCHEDULE):
        return stated if stated in LIVE else Status.BOOKED
    if stated is not None:
        return stated
    return old.status if old is not None else Status.BOOKED


def _cross_check(facts: Facts, status: Status) -> None:
    """The trigger decides; a filler status that disagrees is logged (no PHI)."""
    if facts.status is not None and facts.status is not status:
        log.info(
            "appointment_status_disagrees",
            trigger=facts.trigger.value,
            filler_status=facts.status.value,
            applied=status.value,
        )


def _event_name(old: Stored, new: Stored, trigger: Trigger) -> str:
    """The trail's name of a change; `rescheduled` (S13) and `moved` (any other change
    of start) stay apart because only a reschedule is a rebooking (`debounce`)."""
    if new.status in LIVE and old.status not in LIVE:
        return "reinstated"
    if new.status is not old.status and new.status in _EVENT_OF:
        return _EVENT_OF[new.status]
    if new.start != old.start and old.start is not None:
        return "rescheduled" if trigger is Trigger.RESCHEDULE else "moved"
    return "modified"


def _after(
    conn: sqlite3.Connection,
    ctx: ApplyContext,
    settings: Settings,
    old: Stored | None,
    new: Stored,
    trigger: Trigger,
) -> None:
    was_live = old is None or old.status in LIVE
    if new.status not in LIVE:
        # A cancellation already held stays held through a second cancelling message
        # (one S15 per sub-appointment, research §A6.3); anything else goes.
        keep = NoticeKind.APPOINTMENT_CANCELLED if new.status is Status.CANCELLED else None
        notices.close_pending(
            conn,
            ctx.now,
            NoticeState.CANCELLED,
            f"appointment_{new.status.value}",
            appointment_id=new.id,
            kinds=tuple(k for k in NoticeKind if k is not keep),
        )
        if (
            new.status is Status.CANCELLED
            and was_live
            and settings.notify_cancellation
            and new.start is not None
            and new.start > ctx.now
        ):
            debounce.hold_cancellation(conn, ctx, new)
    elif old is None or old.status not in LIVE or new.start != old.start:
        # Another appointment's held cancellation is a rebooking's only for a booking
        # or a reschedule (Epic's cancel + S12/S13); a modification that moves an
        # appointment re-plans its own notices only.
        booking = old is None or trigger in (Trigger.BOOK, Trigger.RESCHEDULE)
        debounce.rebooked(conn, ctx, settings, new, others=booking)
    ctx.hooks.changed(conn, ctx, new.id)


# -- rows --------------------------------------------------------------------------------


def ext_index(ctx: ApplyContext, key: str) -> bytes:
    return ctx.cipher.keyed_digest("appointment", ctx.source, key)


def load(conn: sqlite3.Connection, ctx: ApplyContext, index: bytes) -> Stored | None:
    r = conn.execute(
        f"SELECT {_ROW} FROM appointments WHERE source = ? AND ext_index = ?",  # noqa: S608
        (ctx.source, index),
    ).fetchone()
    return None if r is None else _stored(ctx, r)


def load_id(conn: sqlite3.Connection, ctx: ApplyContext, appointment_id: str) -> Stored | None:
    r = conn.execute(
        f"SELECT {_ROW} FROM appointments WHERE id = ?",  # noqa: S608
        (appointment_id,),
    ).fetchone()
    return None if r is None else _stored(ctx, r)


def _stored(ctx: ApplyContext, r: tuple[Any, ...]) -> Stored:
    cipher = ctx.cipher
    appt_id = str(r[0])
    location = None
    if r[6] is not None or r[7] is not None:
        label = json.loads(cipher.decrypt(r[7], appt_id, "location")) if r[7] else {}
        location = Location(r[6], label.get("clinic"), label.get("place"))
    provider = cipher.decrypt(r[8], appt_id, "provider") if r[8] else None
    return Stored(
        appt_id, r[1], Status(r[2]), r[3], r[4], r[5], location, provider, r[9], r[10], r[11],
        r[12],
    )  # fmt: skip


def _same(old: Stored, new: Stored) -> bool:
    return (old.patient_id, old.status, old.start, old.end, old.service, old.location) == (
        new.patient_id,
        new.status,
        new.start,
        new.end,
        new.service,
        new.location,
    ) and (old.provider, old.appt_type) == (new.provider, new.appt_type)


def _with_code(s: Stored, code: str) -> Stored:
    return dataclasses.replace(s, short_code=code)


def _sealed(
    ctx: ApplyContext, appt_id: str, s: Facts | Stored
) -> tuple[bytes | None, bytes | None]:
    cipher = ctx.cipher
    loc = s.location
    label = None
    if loc is not None and (loc.clinic or loc.place):
        text = json.dumps({"clinic": loc.clinic, "place": loc.place}, sort_keys=True)
        label = cipher.encrypt(text, appt_id, "location")
    provider = cipher.encrypt(s.provider, appt_id, "provider") if s.provider else None
    return label, provider


def _insert(
    conn: sqlite3.Connection,
    ctx: ApplyContext,
    facts: Facts,
    status: Status,
    index: bytes,
    settings: Settings,
) -> Stored:
    """Insert the new appointment; returns it as `load` would read it back."""
    if facts.patient is None:
        raise MappingError(
            ERR_REQUIRED_FIELD_MISSING, "a new appointment needs its patient (PID)", "PID"
        )
    patient = patients.upsert(conn, ctx, facts.patient)
    appt_id = "apt_" + secrets.token_hex(8)
    code = short_code(conn, patient.id, appt_id, None)
    label, provider = _sealed(ctx, appt_id, facts)
    conn.execute(
        "INSERT INTO appointments (id, source, ext_index, ext_key_ct, patient_id, status,"
        " start_at, end_at, time_zone, service, location_code, location_label_ct, provider_ct,"
        " short_code, version, last_event, last_msg_at, created_from_update, rebook_window,"
        " created_at, updated_at, appt_type) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,1,?,?,?,?,?,?,?)",
        (
            appt_id,
            ctx.source,
            index,
            ctx.cipher.encrypt(facts.key, appt_id, "ext_key"),
            patient.id,
            status.value,
            facts.start,
            facts.end,
            ctx.profile.time_zone,
            facts.service,
            facts.location.code if facts.location else None,
            label,
            provider,
            code,
            facts.trigger.value,
            facts.msg_at,
            0 if facts.trigger in (Trigger.BOOK, Trigger.UPSERT) else 1,
            settings.rebook_window,
            ctx.now,
            ctx.now,
            facts.appt_type,
        ),
    )
    loc = facts.location
    if loc is not None and not (loc.clinic or loc.place):  # no label was sealed
        loc = None if loc.code is None else Location(loc.code, None, None)
    return Stored(
        appt_id, patient.id, status, facts.start, facts.end, facts.service, loc,
        facts.provider or None, code, 1, facts.msg_at, facts.appt_type,
    )  # fmt: skip


def _update(
    conn: sqlite3.Connection, ctx: ApplyContext, s: Stored, settings: Settings, *, unconfirm: bool
) -> None:
    label, provider = _sealed(ctx, s.id, s)
    conn.execute(
        "UPDATE appointments SET patient_id = ?, status = ?, start_at = ?, end_at = ?,"
        " time_zone = ?, service = ?, location_code = ?, location_label_ct = ?,"
        " provider_ct = ?, short_code = ?, version = ?, last_event = ?, last_msg_at = ?,"
        " rebook_window = ?, updated_at = ?, appt_type = ?,"
        " confirmed_at = CASE WHEN ? THEN NULL ELSE confirmed_at END,"
        " confirmed_via = CASE WHEN ? THEN NULL ELSE confirmed_via END WHERE id = ?",
        (
            s.patient_id,
            s.status.value,
            s.start,
            s.end,
            ctx.profile.time_zone,
            s.service,
            s.location.code if s.location else None,
            label,
            provider,
            s.short_code,
            s.version,
            s.status.value,
            s.last_msg_at,
            settings.rebook_window,
            ctx.now,
            s.appt_type,
            unconfirm,
            unconfirm,
            s.id,
        ),
    )


def _event(
    conn: sqlite3.Connection,
    ctx: ApplyContext,
    appt_id: str,
    event: str,
    old: Stored | None,
    new_status: Status,
    new_start: float | None,
    version: int,
) -> None:
    conn.execute(
        "INSERT INTO appointment_events (appointment_id, at, event, source_ref, old_status,"
        " new_status, old_start, new_start, version) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            appt_id,
            ctx.now,
            event,
            ctx.message_ref or ctx.actor,
            old.status.value if old else None,
            new_status.value,
            old.start if old else None,
            new_start,
            version,
        ),
    )


def short_code(conn: sqlite3.Connection, patient_id: str, appt_id: str, keep: str | None) -> str:
    """Four digits no other live appointment of the patient has (`keep` if it is free):
    `C 1234` / `STOP 1234` name one appointment among the patient's."""
    live = tuple(s.value for s in LIVE)
    taken = {
        r[0]
        for r in conn.execute(
            "SELECT short_code FROM appointments WHERE patient_id = ? AND id != ?"  # noqa: S608
            f" AND status IN ({','.join('?' * len(live))})",
            (patient_id, appt_id, *live),
        )
    }
    if keep is not None and keep not in taken:
        return keep
    for _ in range(20):
        code = f"{secrets.randbelow(10_000):04d}"
        if code not in taken:
            return code
    free = sorted({f"{n:04d}" for n in range(10_000)} - taken)
    if not free:
        raise MappingError(ERR_APPLICATION_INTERNAL, "the patient has 10000 live appointments")
    return free[secrets.randbelow(len(free))]


def confirm(conn: sqlite3.Connection, ctx: ApplyContext, appointment_id: str, via: str) -> bool:
    """The patient confirmed (a reply `C`, `via` e.g. `sms`): `confirmed_at`, a version
    bump, a `confirmed` event and the hooks, in the caller's transaction. False (nothing
    written) if the appointment is not live or already confirmed."""
    live = tuple(s.value for s in LIVE)
    row = conn.execute(
        "UPDATE appointments SET confirmed_at = ?, confirmed_via = ?, version = version + 1,"  # noqa: S608
        " last_event = 'confirmed', updated_at = ? WHERE id = ? AND confirmed_at IS NULL"
        f" AND status IN ({','.join('?' * len(live))}) RETURNING id",
        (ctx.now, via, ctx.now, appointment_id, *live),
    ).fetchone()
    if row is None:
        return False
    now = load_id(conn, ctx, appointment_id)
    assert now is not None
    _event(conn, ctx, appointment_id, "confirmed", now, now.status, now.start, now.version)
    ctx.hooks.changed(conn, ctx, appointment_id)
    return True


def cancel_by_patient(conn: sqlite3.Connection, ctx: ApplyContext, appointment_id: str) -> bool:
    """The patient cancelled by reply (only where a site lets a reply cancel): status
    cancelled, a version bump, a `patient_cancel` event, its pending notices withdrawn
    and the hooks, in the caller's transaction. False if it was not live."""
    old = load_id(conn, ctx, appointment_id)
    if old is None or old.status not in LIVE:
        return False
    row = conn.execute(
        "UPDATE appointments SET status = ?, version = version + 1,"
        " last_event = 'patient_cancel', updated_at = ? WHERE id = ? AND version = ?"
        " RETURNING version",
        (Status.CANCELLED.value, ctx.now, appointment_id, old.version),
    ).fetchone()
    if row is None:
        return False
    _event(conn, ctx, appointment_id, "patient_cancel", old, Status.CANCELLED, old.start, row[0])
    notices.close_pending(
        conn, ctx.now, NoticeState.CANCELLED, "patient_cancel", appointment_id=appointment_id
    )
    ctx.hooks.changed(conn, ctx, appointment_id)
    return True


def ignored(commands: Sequence[object]) -> str | None:
    """Why a mapped message changed nothing (`stale`, `unknown_appointment`), for the
    listener to store it as ignored; None if it was applied. Call after `apply`."""
    outcomes = {c.outcome for c in commands if isinstance(c, AppointmentChange)}
    if not outcomes or None in outcomes or "unchanged" in outcomes:
        return None
    return sorted(o for o in outcomes if o is not None)[0]
