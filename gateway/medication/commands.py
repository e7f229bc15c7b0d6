"""Medication commands: put (create or change) a schedule, stop one, a dispense ready.

Built by the RDE / RDS mappers and by `POST` / `DELETE /medications`; applied in the
writer's transaction. A schedule from a feed is keyed by its order number (a keyed
index; `[source, order]` is unique), so a repeated or changed order updates the same
schedule, and a discontinue finds it.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.clinical.commands import (
    ERR_DATA_TYPE,
    ERR_REQUIRED_FIELD_MISSING,
    ApplyContext,
    MappingError,
)
from gateway.clinical.notices import NoticeKind
from gateway.consent.purposes import Purpose
from gateway.medication import schedules
from gateway.medication.schedules import NewSchedule, ScheduleRow
from gateway.medication.timing import DoseSchedule, normalise_times
from gateway.results import events, settings
from gateway.results.events import Event, OrderKey, Outcome
from gateway.results.recipient import Target, resolve
from gateway.templates.variables import fits

When = dt.date | dt.datetime | None  # a date, or a time (aware, or naive: local)


@dataclass(frozen=True, slots=True)
class Timing:
    """Doses at `times` (HH:MM, local), or at the times the site's table gives for the
    repeat-pattern code `pattern` (BID, TID...: `[medication.pattern_times]`), on every
    date from `start` to `end` inclusive (None: from today; until stopped). `where`
    names the field the timing came from, for errors."""

    times: tuple[str, ...]
    pattern: str | None = None
    start: When = None
    end: When = None
    where: str = "TQ1-4"


@dataclass(frozen=True, slots=True)
class Put:
    row: ScheduleRow
    created: bool
    planned: int  # dose notices planned now
    stopped: bool = False  # the order's schedule had been stopped: left as it was


def order_index(ctx: ApplyContext, order: OrderKey) -> bytes:
    return ctx.cipher.keyed_digest(
        "medication_order", ctx.source, order.role, order.namespace, order.number
    )


def _date(value: When, zone: ZoneInfo, now: float) -> dt.date:
    if value is None:
        return dt.datetime.fromtimestamp(now, zone).date()
    if isinstance(value, dt.datetime):
        return value.astimezone(zone).date() if value.tzinfo is not None else value.date()
    return value


@dataclass(frozen=True, slots=True)
class PutSchedule:
    target: Target
    timing: Timing
    order: OrderKey | None = None  # None (API without external key): always a new one
    label: str | None = None  # dropped unless `[medication] allow_drug_names`
    language: str | None = None
    time_zone: str | None = None  # None: the patient's zone, else the interface's
    zone_fallback: bool = True  # False (the API): no zone of the patient's is refused

    def apply(self, conn: sqlite3.Connection, ctx: ApplyContext) -> None:
        self.run(conn, ctx)

    def run(self, conn: sqlite3.Connection, ctx: ApplyContext) -> Put | None:
        """The schedule put and planned; None if the patient has no number to text."""
        site = settings.of(ctx.store)
        recipient = resolve(conn, ctx, self.target)
        if recipient.contact_idx is None:
            return None
        zone_name = self.time_zone or recipient.time_zone
        if zone_name is None and not self.zone_fallback:
            raise MappingError(
                ERR_REQUIRED_FIELD_MISSING, "no time zone is known for this patient", "time_zone"
            )
        zone_name = zone_name or ctx.profile.time_zone
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise MappingError(ERR_DATA_TYPE, "not an IANA time zone", "time_zone") from None
        start = _date(self.timing.start, zone, ctx.now)
        end = None if self.timing.end is None else _date(self.timing.end, zone, ctx.now)
        if end is not None and end < start:
            raise MappingError(
                ERR_DATA_TYPE, "the end date is before the start date", self.timing.where
            )
        times = self.timing.times
        if not times and self.timing.pattern:
            times = site.pattern_times(self.timing.pattern) or ()
        if not times:
            raise MappingError(
                ERR_DATA_TYPE, "a repeat pattern the site's table does not list", self.timing.where
            )
        dose = DoseSchedule(normalise_times(times), zone_name, start, end)
        new = NewSchedule(
            ctx.source,
            None if self.order is None else order_index(ctx, self.order),
            recipient.patient_id,
            recipient.contact_idx,
            dose,
            self.label if site.medication.allow_drug_names else None,
            self.language or recipient.language,
            ctx.actor,
        )
        found = (
            None if new.ext_index is None else schedules.by_order(conn, ctx.source, new.ext_index)
        )
        if found is not None and found.state == "stopped":
            return Put(found, created=False, planned=0, stopped=True)
        if found is None:
            schedule_id = schedules.insert(conn, ctx.cipher, new, ctx.now)
        else:
            schedule_id = found.id
            schedules.replace(conn, ctx.cipher, schedule_id, new, ctx.now)
        planned = schedules.plan(conn, ctx.cipher, schedule_id, ctx.now, site)
        row = schedules.get(conn, schedule_id)
        assert row is not None
        return Put(row, created=found is None, planned=planned)


@dataclass(frozen=True, slots=True)
class StopSchedule:
    """Stop the schedule of `order` (a discontinue from the feed) or `schedule_id` (the
    API); its pending doses are cancelled in the same transaction."""

    order: OrderKey | None = None
    schedule_id: str | None = None
    reason: str = "discontinued"

    def apply(self, conn: sqlite3.Connection, ctx: ApplyContext) -> None:
        self.run(conn, ctx)

    def run(self, conn: sqlite3.Connection, ctx: ApplyContext) -> tuple[ScheduleRow, bool] | None:
        """(the schedule, whether this stopped it), or None if there is no such schedule
        (a discontinue of an order never seen, or never texted about)."""
        if self.order is not None:
            found = schedules.by_order(conn, ctx.source, order_index(ctx, self.order))
        else:
            found = None if self.schedule_id is None else schedules.get(conn, self.schedule_id)
        if found is None:
            return None
        changed = schedules.stop(conn, found.id, self.reason, ctx.now)
        row = schedules.get(conn, found.id)
        assert row is not None
        return row, changed


@dataclass(frozen=True, slots=True)
class MedicationReady:
    """A dispense (RDS^O13) ready for pick-up at `location` (the pharmacy's label);
    one notice per order and dispense, whatever repeats."""

    target: Target
    dispensed: tuple[tuple[OrderKey, str], ...]  # (order, "dispensed:<RXD-3>")
    location: str | None = None
    label: str | None = None  # dropped unless `[medication] allow_drug_names`

    def apply(self, conn: sqlite3.Connection, ctx: ApplyContext) -> None:
        self.run(conn, ctx)

    def run(self, conn: sqlite3.Connection, ctx: ApplyContext) -> Outcome:
        site = settings.of(ctx.store)
        variables: dict[str, str] = {}
        if self.location and fits("location", self.location):  # else "the pharmacy"
            variables["location"] = self.location
        if self.label and site.medication.allow_drug_names:
            variables["medication"] = self.label
        return events.record(
            conn,
            ctx,
            NoticeKind.MEDICATION_READY,
            resolve(conn, ctx, self.target),
            [Event(order, status) for order, status in self.dispensed],
            template=NoticeKind.MEDICATION_READY.value,
            purpose=Purpose.MEDICATION.value,
            due_at=ctx.now,
            variables=variables,
        )
