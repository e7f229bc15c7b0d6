"""When a reminder is due: an offset from the appointment's start, in the clinic's zone.

Theory of operation (RapidPro's `ScheduleForTime`, research §C1, computed in the
clinic's zone rather than an organisation's):

1. Minutes and hours are exact durations: "-2h" is 7,200 seconds before the start,
   whatever the clocks do meanwhile.
2. Days and weeks are calendar steps in the clinic's zone: "-1d" from 09:00 local is
   09:00 local the day before, which is 23 or 25 hours earlier across a DST change.
3. A delivery time replaces the time of day, in the clinic's zone, on the day step 1
   or 2 landed on ("-1d" at 18:00: 18:00 the evening before).
4. A wall time that does not exist (the spring-forward gap) is read with the offset in
   force before the gap, i.e. it moves forward by the gap's length (02:30 becomes
   03:30); an ambiguous one (the autumn repeat) is its first occurrence.

Whether the result is planned at all (in the past, after the start, booked too late)
is the planner's decision, not this module's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

_LEAD = re.compile(r"^-([1-9][0-9]{0,5})([mhdw])$")
_DURATION = re.compile(r"^([0-9]{1,6})([mhdw])$")
_CLOCK = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_LEAD = 90 * 86400  # a reminder at most 90 days before the appointment


@dataclass(frozen=True, slots=True)
class Lead:
    """How long before the start: `count` units of `unit` (m, h, d, w)."""

    count: int
    unit: str

    @classmethod
    def parse(cls, text: str) -> Lead:
        m = _LEAD.match(text)
        if m is None:
            raise ValueError("write it as a negative count with a unit m, h, d or w, e.g. -24h")
        lead = cls(int(m[1]), m[2])
        if lead.nominal > MAX_LEAD:
            raise ValueError("at most 90 days before the start")
        return lead

    @property
    def nominal(self) -> int:
        """Seconds, taking a day as 24 h (for limits and ordering only)."""
        return self.count * _SECONDS[self.unit]

    def __str__(self) -> str:
        return f"-{self.count}{self.unit}"


def parse_duration(text: str) -> float:
    """Seconds of "48h", "2d", "90m", "1w" (a day is 24 h here: a span, not a date)."""
    m = _DURATION.match(text)
    if m is None:
        raise ValueError("write it as a count with a unit m, h, d or w, e.g. 48h")
    seconds = int(m[1]) * _SECONDS[m[2]]
    if seconds > MAX_LEAD:
        raise ValueError("at most 90 days")
    return float(seconds)


def parse_clock(text: str) -> time:
    m = _CLOCK.match(text)
    if m is None:
        raise ValueError('write it as HH:MM, e.g. "18:00"')
    return time(int(m[1]), int(m[2]))


def due_at(start: float, tz: ZoneInfo, lead: Lead, delivery: time | None = None) -> float:
    """Unix seconds at which a reminder `lead` before `start` is due (rules 1-4 above)."""
    if lead.unit in ("m", "h"):
        local = datetime.fromtimestamp(start - lead.nominal, tz)
    else:
        begins = datetime.fromtimestamp(start, tz)
        days = lead.count * (7 if lead.unit == "w" else 1)
        day = begins.date() - timedelta(days=days)
        local = datetime.combine(day, begins.timetz().replace(fold=0))
    if delivery is not None:
        local = datetime.combine(local.date(), delivery, tzinfo=tz)
    return local.timestamp()


def iso_local(at: float, tz: ZoneInfo) -> str:
    """ISO 8601 with the zone's offset at that instant, to the second."""
    return datetime.fromtimestamp(at, tz).isoformat(timespec="seconds")


def iso_utc(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
