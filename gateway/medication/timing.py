"""Dose times of a medication schedule: local times of day, from a start to an end date,
in the patient's zone, turned into UTC instants over a window.

Theory of operation: a schedule is a set of wall-clock times ("08:00", "20:00") on
every local date from `start` to `end` (inclusive; no end: until stopped). The
planner asks for the instants in a window [lo, hi) of UTC seconds; this walks the
local dates the window touches and converts each (date, time) with `zoneinfo`.

Daylight saving time, decided as RFC 5545 (iCalendar, §3.3.5) decides for recurring
local times:
- a time that does not exist on a spring-forward day (02:30 in New York on the
  second Sunday of March) is read with the offset before the gap, so the dose goes at
  03:30 local, the same elapsed time after midnight: late by the gap, never dropped;
- a time that happens twice on a fall-back day (01:30 on the first Sunday of
  November) is the first of the two (`fold=0`): one dose, never two.
Either way each (date, time) yields exactly one instant, and instants increase with
the date, so a window never holds a dose twice.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_TM = re.compile(r"^([01][0-9]|2[0-3]):?([0-5][0-9])(?::?([0-5][0-9])(?:\.[0-9]+)?)?$")


def time_of_day(text: str) -> str | None:
    """An HL7 TM (`0800`, `113005`, `11:30:05`, offset dropped) or `HH:MM` as `HH:MM`;
    None if it is no time of day. Seconds are dropped: an SMS is not that precise."""
    text = re.split(r"[+-]", text.strip(), maxsplit=1)[0]
    m = _TM.match(text)
    return None if m is None else f"{m[1]}:{m[2]}"


@dataclass(frozen=True, slots=True)
class DoseSchedule:
    times: tuple[str, ...]  # sorted, distinct, HH:MM
    time_zone: str
    start: dt.date
    end: dt.date | None = None  # inclusive

    def __post_init__(self) -> None:
        if not self.times or any(_HHMM.match(t) is None for t in self.times):
            raise ValueError("times: one or more HH:MM")
        if self.end is not None and self.end < self.start:
            raise ValueError("end_date: before start_date")
        ZoneInfo(self.time_zone)  # raises for an unknown zone


def normalise_times(times: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(set(times)))


def local_instant(day: dt.date, hhmm: str, zone: ZoneInfo) -> float:
    """The UTC instant of `hhmm` on `day` in `zone`, per the module's DST rules."""
    hour, minute = int(hhmm[:2]), int(hhmm[3:])
    naive = dt.datetime(day.year, day.month, day.day, hour, minute)
    # fold=0 gives the earlier of two repeated times, and for a time in a gap the
    # offset in force before it: RFC 5545's reading in both cases.
    return naive.replace(tzinfo=zone, fold=0).timestamp()


def doses(schedule: DoseSchedule, lo: float, hi: float) -> Iterator[tuple[float, str]]:
    """(UTC instant, local HH:MM) of every dose in [lo, hi), in time order."""
    if hi <= lo:
        return
    zone = ZoneInfo(schedule.time_zone)
    # Local dates the window can touch: a day either side covers any UTC offset.
    first = max(schedule.start, dt.datetime.fromtimestamp(lo, zone).date() - dt.timedelta(days=1))
    last = dt.datetime.fromtimestamp(hi, zone).date() + dt.timedelta(days=1)
    if schedule.end is not None:
        last = min(last, schedule.end)
    day = first
    while day <= last:
        yield from _one_per_instant(
            (at, hhmm)
            for hhmm in schedule.times
            if lo <= (at := local_instant(day, hhmm, zone)) < hi
        )
        day += dt.timedelta(days=1)


def _one_per_instant(day: Iterable[tuple[float, str]]) -> Iterator[tuple[float, str]]:
    """A day's doses in time order (on a spring-forward day 02:30 moves past a 03:00
    dose), one per instant: a dose the gap moved onto another's instant (00:00 becoming
    01:00 beside a 01:00 dose) is that dose, so the patient gets one reminder, not two
    at once. The dose whose own time it is keeps its label (the greater HH:MM)."""
    by_instant = dict(sorted(day))  # the greater HH:MM written last
    yield from sorted(by_instant.items())


def ended_by(schedule: DoseSchedule, now: float) -> bool:
    """True once no dose of the schedule is left at or after `now`."""
    if schedule.end is None:
        return False
    zone = ZoneInfo(schedule.time_zone)
    return max(local_instant(schedule.end, t, zone) for t in schedule.times) < now
