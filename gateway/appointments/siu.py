"""SIU^S12…S26 (scheduling notifications) as appointment changes. Pure: no store, no clock.

What is read (research §A2, §0.3):
- the key: SCH-2 (filler appointment id) or SCH-1 (placer), per the profile's
  `appointment_key`, the other one when it is empty;
- MSH-7, the sender's time of the change, to order updates;
- the start and end from the profile's timing source: TQ1-7/8, SCH-11.4/5, or the
  first AIS-4 (with AIS-7/8 duration), else AIL-6 (AIL-9/10), else AIP-6 (AIP-9/10);
  a time with an offset is taken as such, one without in the profile's time zone;
- the filler status (SCH-25, else the first AIS-10), a cross-check of the trigger;
- the service (AIS-3's code), the location (AIL-3, else PV1-3), the provider (AIP-3,
  else SCH-16), and the patient through `patients.extract` when a PID is present;
- the appointment type: SCH-8's code (CE.1; table 0277 or the site's own visit
  types), for the reminder rules' type filter. SCH-7, the appointment *reason*
  (table 0276: CHECKUP, EMERGENCY, FOLLOWUP...), is not a fallback: it is another
  vocabulary, and a rule written for a type must not match a reason that happens to
  share its code. An empty SCH-8 leaves the stored type as it was. (Epic's outgoing
  SIU leaves both empty and sends the visit type as AIS-3: the service filter.)

The trigger event (MSH-9.2) decides what happened (`model.Trigger`); routing is by
MSH-9 alone, so a message labelled SIU elsewhere (Microsoft's `SIU_12.hl7` is an
ADT^A60) never reaches this mapper.
"""

from __future__ import annotations

from collections.abc import Sequence

import hl7

from gateway.appointments import hltime
from gateway.appointments.machine import AppointmentChange
from gateway.appointments.model import FILLER_STATUS, Facts, Location, Status, Trigger
from gateway.appointments.settings import KeyChoice, Settings
from gateway.clinical import fields, patients
from gateway.clinical.commands import (
    ERR_DATA_TYPE,
    ERR_REQUIRED_FIELD_MISSING,
    Command,
    MappingError,
)
from gateway.clinical.mappers import maps
from gateway.clinical.profile import InterfaceProfile, TimingSource

TRIGGERS: dict[str, Trigger] = {
    "S12": Trigger.BOOK,
    "S13": Trigger.RESCHEDULE,
    "S14": Trigger.MODIFY,
    "S15": Trigger.CANCEL,
    "S16": Trigger.DISCONTINUE,
    "S17": Trigger.DELETE,
    "S26": Trigger.NOSHOW,
}
# Duration units (CE/CWE code, lower case) in seconds: ISO+ / ANSI+ and what feeds send.
_UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "min": 60, "m": 60, "minute": 60, "minutes": 60, "mins": 60,
    "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
_NEEDS_START = (Trigger.BOOK, Trigger.RESCHEDULE)


@maps("SIU", *TRIGGERS)
def map_siu(message: hl7.Message, profile: InterfaceProfile) -> Sequence[Command]:
    msh = fields.first(message, "MSH")
    trigger = TRIGGERS[fields.value(message, msh, 9, 2).strip()]
    sch = fields.first(message, "SCH")
    if sch is None:
        raise MappingError(ERR_REQUIRED_FIELD_MISSING, "the message has no SCH segment", "SCH")
    settings = Settings.of(profile)
    msg_at = _time(message, msh, 7, 1, profile, "MSH-7")
    if msg_at is None:
        raise MappingError(ERR_REQUIRED_FIELD_MISSING, "MSH-7 (message time) is empty", "MSH-7")
    start, end, where = timing(message, sch, profile)
    if start is None and trigger in _NEEDS_START:
        raise MappingError(ERR_REQUIRED_FIELD_MISSING, f"no appointment start in {where}", where)
    has_pid = fields.first(message, "PID") is not None
    facts = Facts(
        trigger,
        appointment_key(message, sch, settings.key),
        msg_at,
        patients.extract(message, profile) if has_pid or trigger in _NEEDS_START else None,
        start,
        end,
        filler_status(message, sch),
        _code(message, fields.first(message, "AIS"), 3),
        location(message),
        provider(message, sch),
        fields.value(message, sch, 8).strip() or None,
    )
    return [AppointmentChange(facts)]


def appointment_key(message: hl7.Message, sch: hl7.Segment, choice: KeyChoice) -> str:
    order = (2, 1) if choice == "filler" else (1, 2)
    for n in order:
        key = fields.value(message, sch, n).strip()
        if key:
            return key
    where = f"SCH-{order[0]}"
    raise MappingError(ERR_REQUIRED_FIELD_MISSING, f"{where} (the appointment id) is empty", where)


def timing(
    message: hl7.Message, sch: hl7.Segment, profile: InterfaceProfile
) -> tuple[float | None, float | None, str]:
    """(start, end, where the start was looked for) from the profile's timing source."""
    if profile.timing_source is TimingSource.TQ1:
        tq1 = fields.first(message, "TQ1")
        start = _time(message, tq1, 7, 1, profile, "TQ1-7")
        return start, _time(message, tq1, 8, 1, profile, "TQ1-8"), "TQ1-7"
    if profile.timing_source is TimingSource.SCH11:
        start = _time(message, sch, 11, 4, profile, "SCH-11.4")
        return start, _time(message, sch, 11, 5, profile, "SCH-11.5"), "SCH-11.4"
    for name, at, duration in (("AIS", 4, 7), ("AIL", 6, 9), ("AIP", 6, 9)):
        for segment in fields.segments(message, name):
            start = _time(message, segment, at, 1, profile, f"{name}-{at}")
            if start is not None:
                return start, _end(message, segment, duration, start), f"{name}-{at}"
    return None, None, "AIS-4"


def _end(message: hl7.Message, segment: hl7.Segment, n: int, start: float) -> float | None:
    amount = fields.value(message, segment, n).strip()
    unit = fields.value(message, segment, n + 1).strip().lower() or "min"
    if not amount or unit not in _UNITS:
        return None
    try:
        return start + float(amount) * _UNITS[unit]
    except ValueError:
        raise MappingError(
            ERR_DATA_TYPE, f"{segment[0]}-{n} (duration) is not a number", f"{segment[0]}-{n}"
        ) from None


def _time(
    message: hl7.Message,
    segment: hl7.Segment | None,
    n: int,
    comp: int,
    profile: InterfaceProfile,
    where: str,
) -> float | None:
    text = fields.value(message, segment, n, comp).strip()
    if not text:
        return None
    seconds = hltime.parse(text, profile.time_zone)
    if seconds is None:
        raise MappingError(ERR_DATA_TYPE, f"{where} is not a date/time", where)
    return seconds


def filler_status(message: hl7.Message, sch: hl7.Segment) -> Status | None:
    text = fields.value(message, sch, 25) or fields.value(message, fields.first(message, "AIS"), 10)
    return FILLER_STATUS.get(text.strip().lower())


def _code(message: hl7.Message, segment: hl7.Segment | None, n: int) -> str | None:
    return fields.value(message, segment, n).strip() or None


def location(message: hl7.Message) -> Location | None:
    """AIL-3, else PV1-3 (PL: point of care, room, bed, facility)."""
    for name in ("AIL", "PV1"):
        segment = fields.first(message, name)
        n = 3
        reps = fields.repetitions(message, segment, n)
        if not reps or not any(c.strip() for c in reps[0]):
            continue
        point = [p.strip() for p in fields.subcomponents(message, fields.component(reps, 0, 1))]
        room = fields.component(reps, 0, 2).strip()
        bed = fields.component(reps, 0, 3).strip()
        facility = fields.subcomponents(message, fields.component(reps, 0, 4))[0].strip()
        code = point[0] if point and point[0] else None
        label = point[1] if len(point) > 1 and point[1] else (point[0] if point else "")
        place = " ".join(p for p in (label, room, bed) if p) or None
        return Location(code, facility or None, place)
    return None


def provider(message: hl7.Message, sch: hl7.Segment) -> str | None:
    """AIP-3, else SCH-16 (XCN) as "prefix given family"."""
    for segment, n in ((fields.first(message, "AIP"), 3), (sch, 16)):
        reps = fields.repetitions(message, segment, n)
        if not reps:
            continue
        family = fields.subcomponents(message, fields.component(reps, 0, 2))[0]
        parts = [fields.component(reps, 0, 6), fields.component(reps, 0, 3), family]
        name = " ".join(p.strip() for p in parts if p.strip())
        if name:
            return name
    return None
