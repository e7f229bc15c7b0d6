"""RDE^O11 / RDE^O25 (pharmacy encoded order, refill) -> medication schedules, and
RDS^O13 (dispense) -> "ready for pick-up".

An RDE holds one ORDER group per ORC: ORC, [TQ1...], [RXO], RXE, [TQ1...] (the timing
the pharmacy encoded), RXR, RXC... ORC-1 (order control, table 0119) DC, OD, CA or
OC stops the order's schedule; any other puts it. The order is ORC-2 (placer) else
ORC-3 (filler).

Timing, first that reads: the TQ1s after RXE, else those before it, else RXE-1 (the
TQ of v2.3/2.4). Times of day come from TQ1-4 (explicit times) or, without them,
from TQ1-3's repeat-pattern code (BID, TID...) through the site's pattern table;
start TQ1-7, end TQ1-8 or start + TQ1-6 (service duration). Several TQ1s add their
times. An order whose timing cannot be read is a `MappingError` naming the field:
quarantined, never a schedule guessed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import hl7

from gateway.clinical import fields, patients
from gateway.clinical.commands import (
    ERR_DATA_TYPE,
    ERR_REQUIRED_FIELD_MISSING,
    Command,
    Ignore,
    MappingError,
)
from gateway.clinical.mappers import maps
from gateway.clinical.profile import InterfaceProfile
from gateway.medication.commands import MedicationReady, PutSchedule, StopSchedule, Timing
from gateway.medication.timing import time_of_day
from gateway.results.events import OrderKey

STOPS = frozenset({"DC", "OD", "CA", "OC"})  # discontinue / cancel, request or done
# TQ1-6 service duration units (CQ.2, ISO+ / UCUM codes) in days.
_UNITS_DAYS = {"D": 1.0, "DAY": 1.0, "WK": 7.0, "W": 7.0, "H": 1 / 24, "HR": 1 / 24}


def order_groups(message: hl7.Message) -> list[list[hl7.Segment]]:
    groups: list[list[hl7.Segment]] = []
    for segment in message:
        name = str(segment[0])
        if name == "ORC":
            groups.append([segment])
        elif groups:
            groups[-1].append(segment)
    return groups


def order_key(message: hl7.Message, orc: hl7.Segment) -> OrderKey:
    for n, role in ((2, "placer"), (3, "filler")):
        number = fields.value(message, orc, n).strip()
        if number:
            return OrderKey(number, fields.value(message, orc, n, 2).strip(), role)
    raise MappingError(
        ERR_REQUIRED_FIELD_MISSING, "the ORC names no placer or filler order number", "ORC-2"
    )


@maps("RDE", "O11", "O25")
def map_rde(message: hl7.Message, profile: InterfaceProfile) -> Sequence[Command]:
    groups = order_groups(message)
    if not groups:
        raise MappingError(ERR_REQUIRED_FIELD_MISSING, "the message has no ORC segment", "ORC")
    details = patients.extract(message, profile)
    commands: list[Command] = []
    for i, group in enumerate(groups):
        orc = group[0]
        order = order_key(message, orc)
        control = fields.value(message, orc, 1).strip().upper()
        if control in STOPS:
            commands.append(StopSchedule(order=order, reason="discontinued"))
            continue
        rxe = next((s for s in group if str(s[0]) == "RXE"), None)
        if rxe is None:
            raise MappingError(
                ERR_REQUIRED_FIELD_MISSING, f"order {i + 1} has no RXE segment", "RXE"
            )
        label = fields.value(message, rxe, 2, 2).strip() or None
        commands.append(PutSchedule(details, timing_of(message, group, rxe), order, label))
    return commands


def timing_of(message: hl7.Message, group: list[hl7.Segment], rxe: hl7.Segment) -> Timing:
    at = group.index(rxe)
    after = [s for s in group[at:] if str(s[0]) == "TQ1"]
    before = [s for s in group[:at] if str(s[0]) == "TQ1"]
    for tq1s in (after, before):
        if tq1s:
            timing = _from_tq1(message, tq1s)
            if timing is not None:
                return timing
    timing = _from_rxe1(message, rxe)
    if timing is not None:
        return timing
    if after or before:
        raise MappingError(ERR_DATA_TYPE, "neither dose times nor a repeat pattern", "TQ1-4")
    raise MappingError(ERR_REQUIRED_FIELD_MISSING, "the order has no dose timing", "TQ1")


def _from_tq1(message: hl7.Message, tq1s: list[hl7.Segment]) -> Timing | None:
    times: set[str] = set()
    pattern = ""
    starts: list[dt.date | dt.datetime] = []
    ends: list[dt.date | dt.datetime] = []
    for tq1 in tq1s:
        explicit = {
            t
            for rep in fields.repetitions(message, tq1, 4)
            if (t := time_of_day(rep[0])) is not None
        }
        code = fields.subcomponents(message, fields.value(message, tq1, 3))[0].strip().upper()
        if not explicit and not code:
            continue
        times.update(explicit)
        pattern = pattern or code
        start = _ts(fields.value(message, tq1, 7), "TQ1-7")
        if start is not None:
            starts.append(start)
        end = _ts(fields.value(message, tq1, 8), "TQ1-8")
        if end is None and start is not None:
            end = _plus_duration(message, tq1, start)
        if end is not None:
            ends.append(end)
    if not times and not pattern:
        return None
    return Timing(
        tuple(sorted(times)),
        None if times else pattern,
        min(starts, key=_sort_key) if starts else None,
        max(ends, key=_sort_key) if ends else None,
        "TQ1-4" if times else "TQ1-3",
    )


def _from_rxe1(message: hl7.Message, rxe: hl7.Segment) -> Timing | None:
    interval = fields.value(message, rxe, 1, 2)
    if not interval:
        return None
    parts = fields.subcomponents(message, interval)
    explicit = parts[1] if len(parts) > 1 else ""
    times = {t for t in (time_of_day(x) for x in explicit.split(",")) if t is not None}
    return Timing(
        tuple(sorted(times)),
        None if times else parts[0].strip().upper(),
        _ts(fields.value(message, rxe, 1, 4), "RXE-1.4"),
        _ts(fields.value(message, rxe, 1, 5), "RXE-1.5"),
        "RXE-1.2",
    )


def _ts(text: str, where: str) -> dt.date | dt.datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        if len(text) == 8 and text.isdigit():
            return dt.datetime.strptime(text, "%Y%m%d").date()  # a date
        parsed: dt.datetime = hl7.parse_datetime(text)
    except ValueError:
        raise MappingError(ERR_DATA_TYPE, "not an HL7 date/time", where) from None
    return parsed


def _plus_duration(
    message: hl7.Message, tq1: hl7.Segment, start: dt.date | dt.datetime
) -> dt.date | dt.datetime | None:
    qty = fields.value(message, tq1, 6).strip()
    unit = fields.subcomponents(message, fields.value(message, tq1, 6, 2))[0].strip().upper()
    if not qty or unit not in _UNITS_DAYS:
        return None
    try:
        days = float(qty) * _UNITS_DAYS[unit]
    except ValueError:
        raise MappingError(ERR_DATA_TYPE, "not a number", "TQ1-6") from None
    if unit in ("D", "DAY", "WK", "W"):
        # "3 days" from the start: the start's date and the two after it.
        return _day(start) + dt.timedelta(days=max(days - 1, 0))
    return start + dt.timedelta(days=days)


def _day(value: dt.date | dt.datetime) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def _sort_key(value: dt.date | dt.datetime) -> tuple[dt.date, float]:
    if isinstance(value, dt.datetime):
        return value.date(), value.hour * 3600 + value.minute * 60 + value.second
    return value, 0.0


@maps("RDS", "O13")
def map_rds(message: hl7.Message, profile: InterfaceProfile) -> Sequence[Command]:
    dispensed: list[tuple[OrderKey, str]] = []
    location = label = None
    for group in order_groups(message):
        for rxd in (s for s in group if str(s[0]) == "RXD"):
            when = fields.value(message, rxd, 3).strip()
            dispensed.append((order_key(message, group[0]), f"dispensed:{when}"))
            location = location or _location(message, rxd)
            label = label or fields.value(message, rxd, 2, 2).strip() or None
    if not dispensed:
        if fields.first(message, "RXD") is None:
            raise MappingError(ERR_REQUIRED_FIELD_MISSING, "the message has no RXD segment", "RXD")
        return [Ignore("no dispense under an ORC")]
    return [MedicationReady(patients.extract(message, profile), tuple(dispensed), location, label)]


def _location(message: hl7.Message, rxd: hl7.Segment) -> str | None:
    """RXD-30 (dispense-to pharmacy: its text, else its code), else RXD-13 (location)."""
    for n, comps in ((30, (2, 1)), (13, (9, 1))):
        for comp in comps:
            text = fields.value(message, rxd, n, comp).strip()
            if text:
                return text
    return None
