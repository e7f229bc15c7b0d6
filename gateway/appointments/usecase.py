"""Appointments as the JSON API and the panel use them: upsert, cancel, list, one.

`upsert` builds the same `Facts` the SIU mapper builds and applies the same
`AppointmentChange` in one writer job, with the idempotent answer (as `POST /messages`
stores its own), so two requests for one external key at once make one appointment.
On a cluster the job is one PostgreSQL transaction on the shared tables, serialised
across the nodes (`gateway/clinical/db.py`): an appointment posted on one node is
read, moved and cancelled on any other.
Writes need the send right (`send` scope, or an acting panel role) and are audited;
reads show the patient's number masked, and only to a caller who sees masked numbers.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from drivers.clock import Clock
from gateway.appointments import queries
from gateway.appointments.machine import AppointmentChange, load_id
from gateway.appointments.model import Facts, Location, Status, Trigger
from gateway.appointments.queries import AppointmentRecord, EventRecord, Search
from gateway.appointments.settings import AppointmentsConfig
from gateway.clinical.commands import ApplyContext, ClinicalHooks, MappingError
from gateway.clinical.db import ClinicalDb, LocalClinicalDb
from gateway.clinical.notices import NoticeRow
from gateway.clinical.patients import PatientDetails, PatientRef, Phone
from gateway.clinical.profile import API_SOURCE
from gateway.errors import ApiError
from gateway.intake import normalise_number
from gateway.store.store import Store
from gateway.usecases.audit import AuditSink
from gateway.usecases.caller import Caller
from gateway.usecases.messages import IdempotencyKey

# What a client may state; `deleted` and `discontinued` come from feeds only.
API_STATUSES = ("booked", "pending", "waitlist", "checked_in", "fulfilled", "cancelled", "noshow")
_TRIGGER_OF = {"cancelled": Trigger.CANCEL, "noshow": Trigger.NOSHOW}


@dataclass(frozen=True, slots=True)
class AppointmentRequest:
    """An appointment as a client states it (upsert by its external key)."""

    external_key: str
    mrn: str
    start: datetime
    end: datetime | None = None
    status: str = "booked"
    number: str | None = None
    language: str | None = None
    service: str | None = None
    location_code: str | None = None
    clinic: str | None = None
    location: str | None = None
    provider: str | None = None
    changed_at: datetime | None = None
    appt_type: str | None = None


class Saved(msgspec.Struct, frozen=True):
    """The answer to a write (stored as the idempotent answer)."""

    id: str
    status: str
    version: int
    short_code: str
    start: str | None
    created: bool
    changed: bool


@dataclass(frozen=True, slots=True)
class AppointmentView:
    """An appointment for a caller: the number masked (None if it sees no numbers)."""

    record: AppointmentRecord
    number_masked: str | None


@dataclass(frozen=True, slots=True)
class AppointmentDetail:
    view: AppointmentView
    notices: tuple[NoticeRow, ...]
    events: tuple[EventRecord, ...]


class Appointments:
    def __init__(
        self,
        *,
        config: AppointmentsConfig,
        region: str,
        store: Store,
        clock: Clock,
        audit: AuditSink,
        hooks: ClinicalHooks,
        db: ClinicalDb | None = None,
    ) -> None:
        """`db`: where the appointments live (a cluster's shared tables); the store's
        own by default. `store` gives the blind index of numbers either way."""
        self.config = config
        self._db = db or LocalClinicalDb(store)
        self._region = region
        self._profile = config.profile(region)
        self._store = store
        self._clock = clock
        self._audit = audit
        self._hooks = hooks

    # -- writing -------------------------------------------------------------------------

    async def upsert(
        self, caller: Caller, req: AppointmentRequest, idempotency: IdempotencyKey | None = None
    ) -> Saved:
        """Create or update the appointment `req.external_key` names (audited). 422 for a
        field (never quoting it); 409 `stale_update` if a later change was applied."""
        self._require_write(caller)
        facts = self._facts(req)
        saved = await self._apply(caller, facts, idempotency)
        await self._audit.record(
            caller.actor, "appointment_saved", "appointment", saved.id, created=saved.created
        )
        return saved

    async def cancel(self, caller: Caller, appointment_id: str) -> Saved:
        """Cancel an appointment posted through the API (audited); one from an HL7 feed is
        cancelled in the EHR (409 `managed_by_interface`)."""
        self._require_write(caller)
        found = await queries.one(self._db, appointment_id)
        if found is None:
            raise ApiError(404, "not_found", "no appointment with this id")
        if found.source != API_SOURCE:
            raise ApiError(
                409,
                "managed_by_interface",
                "this appointment comes from an HL7 interface: cancel it in the EHR",
            )
        saved = await self._apply(caller, None, None, cancel_id=appointment_id)
        if saved.changed:
            await self._audit.record(caller.actor, "appointment_cancelled", "appointment", saved.id)
        return saved

    async def _apply(
        self,
        caller: Caller,
        facts: Facts | None,
        idempotency: IdempotencyKey | None,
        *,
        cancel_id: str | None = None,
    ) -> Saved:
        now = self._clock.time()
        ctx = ApplyContext(
            now,
            API_SOURCE,
            caller.actor,
            self._profile,
            self._store,
            self._hooks,
            sealer=self._db.cipher,
        )

        def job(conn: sqlite3.Connection) -> Saved | str:
            change = self._change(conn, ctx, facts, cancel_id)
            change.apply(conn, ctx)
            if change.outcome == "stale":
                return "stale"
            assert change.appointment_id is not None
            stored = load_id(conn, ctx, change.appointment_id)
            assert stored is not None
            saved = Saved(
                stored.id,
                stored.status.value,
                stored.version,
                stored.short_code,
                None if stored.start is None else _rfc3339(stored.start),
                change.created,
                change.outcome is None,
            )
            if idempotency is not None and caller.token_id is not None:
                sql, args = self._store.idempotency_statement(
                    caller.token_id,
                    idempotency.key_hash,
                    idempotency.request_hash,
                    201 if change.created else 200,
                    msgspec.json.encode(saved),
                    now,
                )
                conn.execute(sql, args)
            return saved

        try:
            done = await self._db.run(job)
        except MappingError as e:  # a setting of [appointments] the row cannot take
            raise ApiError(422, "invalid_appointment", e.text) from None
        if isinstance(done, str):
            raise ApiError(
                409, "stale_update", "a change newer than changed_at was applied already"
            )
        return done

    @staticmethod
    def _change(
        conn: sqlite3.Connection, ctx: ApplyContext, facts: Facts | None, cancel_id: str | None
    ) -> AppointmentChange:
        if facts is not None:
            return AppointmentChange(facts)
        assert cancel_id is not None
        key = conn.execute(
            "SELECT ext_key_ct FROM appointments WHERE id = ?", (cancel_id,)
        ).fetchone()[0]
        external = ctx.cipher.decrypt(key, cancel_id, "ext_key")
        if not external:  # erased (MSG-12): no booking to find it by, nothing to change
            raise ApiError(
                409, "erased", "this appointment's details were erased; it can no longer change"
            )
        return AppointmentChange(Facts(Trigger.CANCEL, external, ctx.now))

    def _facts(self, req: AppointmentRequest) -> Facts:
        if req.status not in API_STATUSES:
            raise _invalid("status", "invalid_status", f"one of {', '.join(API_STATUSES)}")
        start = req.start.timestamp()
        end = None if req.end is None else req.end.timestamp()
        if end is not None and end < start:
            raise _invalid("end", "invalid_end", "before start")
        phones: tuple[Phone, ...] = ()
        if req.number is not None:
            e164 = normalise_number(req.number, self._region)
            if e164 is None:
                raise _invalid("patient.number", "invalid_number", "not a valid phone number")
            phones = (Phone(e164, "api", "", "", 0),)
        changed_at = req.changed_at.timestamp() if req.changed_at else self._clock.time()
        location = None
        if req.location_code or req.clinic or req.location:
            location = Location(req.location_code, req.clinic, req.location)
        return Facts(
            _TRIGGER_OF.get(req.status, Trigger.UPSERT),
            req.external_key,
            changed_at,
            PatientDetails(PatientRef("", req.mrn), phones, req.language),
            start,
            end,
            Status(req.status),
            req.service,
            location,
            req.provider,
            req.appt_type,
        )

    @staticmethod
    def _require_write(caller: Caller) -> None:
        if not caller.may_send:
            raise ApiError(403, "forbidden", "changing appointments needs the 'send' scope")

    # -- reading -------------------------------------------------------------------------

    def _view(self, caller: Caller, r: AppointmentRecord) -> AppointmentView:
        masked = caller.mask(r.number) if caller.sees_masked and r.number else None
        return AppointmentView(dataclasses.replace(r, number=None), masked)

    async def search(self, caller: Caller, s: Search) -> list[AppointmentView]:
        return [self._view(caller, r) for r in await queries.search(self._db, s)]

    async def get(self, caller: Caller, appointment_id: str) -> AppointmentDetail:
        found = await queries.one(self._db, appointment_id)
        if found is None:
            raise ApiError(404, "not_found", "no appointment with this id")
        return AppointmentDetail(
            self._view(caller, found),
            tuple(await queries.notices_of(self._db, appointment_id)),
            tuple(await queries.events(self._db, appointment_id)),
        )

    async def counts(self) -> dict[str, int]:
        return await queries.counts(self._db)


def _invalid(field_name: str, code: str, what: str) -> ApiError:
    return ApiError(422, code, f"{field_name}: {what}", field=field_name)


def _rfc3339(seconds: float) -> str:
    """As the API shows every time (`gateway.web.formats.iso`): UTC, milliseconds."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
