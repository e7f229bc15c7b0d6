"""What a feed or a request says about one appointment, before it is applied."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.clinical.patients import PatientDetails


class Status(enum.StrEnum):
    """An appointment's status (FHIR's codes, as HL7's ConceptMap maps table 0278)."""

    BOOKED = "booked"
    PENDING = "pending"
    WAITLIST = "waitlist"
    CHECKED_IN = "checked_in"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    DISCONTINUED = "discontinued"
    DELETED = "deleted"  # entered in error (S17)
    NOSHOW = "noshow"


# Still to happen: reminders are planned, replies are matched, the short code is taken.
LIVE = frozenset({Status.BOOKED, Status.PENDING, Status.WAITLIST, Status.CHECKED_IN})

# SCH-25 / AI*-status (table 0278) -> status; Blocked has no counterpart.
FILLER_STATUS: dict[str, Status] = {
    "booked": Status.BOOKED,
    "overbook": Status.BOOKED,
    "pending": Status.PENDING,
    "waitlist": Status.WAITLIST,
    "started": Status.CHECKED_IN,
    "complete": Status.FULFILLED,
    "cancelled": Status.CANCELLED,
    "canceled": Status.CANCELLED,
    "dc": Status.DISCONTINUED,
    "deleted": Status.DELETED,
    "noshow": Status.NOSHOW,
}


class Trigger(enum.StrEnum):
    """What the sender says happened (the SIU trigger event), or `upsert` (the API)."""

    BOOK = "book"  # S12
    RESCHEDULE = "reschedule"  # S13: new time
    MODIFY = "modify"  # S14: a changed start is a move; filler status Cancelled a cancel
    CANCEL = "cancel"  # S15
    DISCONTINUE = "discontinue"  # S16
    DELETE = "delete"  # S17: entered in error, never announced
    NOSHOW = "noshow"  # S26
    UPSERT = "upsert"  # the JSON API: book if new, else modify


@dataclass(frozen=True, slots=True)
class Location:
    """`code`: the point of care (PL-1), kept in clear for rule filters; `clinic` (the
    facility, PL-4) and `place` (point of care and room) are stored encrypted."""

    code: str | None
    clinic: str | None = None
    place: str | None = None


@dataclass(frozen=True, slots=True)
class Facts:
    """One message's or request's view of an appointment. `key`: the external id
    (placer or filler, per profile); `msg_at`: when the sender made the change (MSH-7),
    for ordering; `status`: the status the sender states (SCH-25), if any; `start` and
    `end`: Unix seconds; `appt_type`: the appointment type code. None means "not given"
    (an update keeps what is stored)."""

    trigger: Trigger
    key: str
    msg_at: float
    patient: PatientDetails | None = None
    start: float | None = None
    end: float | None = None
    status: Status | None = None
    service: str | None = None
    location: Location | None = None
    provider: str | None = None
    appt_type: str | None = None  # SCH-8.1 / the API's `type`: the rules' type filter
