"""Dates and times in words, in the clinic's zone and the reader's language.

A value of a `datetime` variable is an instant: Unix seconds, or ISO 8601 with an
offset (`2026-03-10T14:30:00-05:00`, `...Z`). It is converted to the clinic's IANA
zone with `zoneinfo`, so a reminder on the day a clock changes shows the wall time
the clinic keeps. An ISO value without an offset is already a wall time in the
clinic's zone and is shown as written. Month and day names are written here for
English and Spanish (no locale database: the host's locales are not ours to rely on);
any other language gets the numeric forms `2026-03-10` and `14:30`.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

FORMATS = ("datetime", "long", "date", "short_date", "weekday", "time")
DATE_FORMATS = ("date", "short_date", "weekday")

_EN_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_EN_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_ES_MONTHS = [
    "enero",
    "febrero",
    "marzo",
    "abril",
    "mayo",
    "junio",
    "julio",
    "agosto",
    "septiembre",
    "octubre",
    "noviembre",
    "diciembre",
]
# Within the GSM 7-bit alphabet (é is in it, á is not): a date never turns a text UCS-2.
_ES_DAYS = ["lunes", "martes", "miércoles", "jueves", "viernes", "sabado", "domingo"]
_ES_SHORT_DAYS = ("lun", "mar", "mié", "jue", "vie", "sab", "dom")
_ES_SHORT_MONTHS = (
    "ene",
    "feb",
    "mar",
    "abr",
    "may",
    "jun",
    "jul",
    "ago",
    "sep",
    "oct",
    "nov",
    "dic",
)
_UNIX = re.compile(r"^-?[0-9]{1,12}(\.[0-9]+)?$")
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_CLOCK = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")


class BadValue(ValueError):
    """A value a date or time variable cannot read; the message never quotes it."""


def base_language(language: str) -> str:
    return language.split("-", 1)[0].lower()


def parse_instant(value: str, zone: ZoneInfo) -> datetime:
    """The wall time in `zone` of an instant (Unix seconds or ISO 8601); an ISO value
    without an offset is a wall time in `zone` already."""
    text = value.strip()
    if _UNIX.match(text):
        return datetime.fromtimestamp(float(text), UTC).astimezone(zone)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadValue("not Unix seconds or an ISO 8601 date and time") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=zone)
    return parsed.astimezone(zone)


def parse_date(value: str, zone: ZoneInfo) -> date:
    """`YYYY-MM-DD` as written, or the local date of an instant."""
    text = value.strip()
    if _DATE.match(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise BadValue("not a calendar date") from None
    return parse_instant(text, zone).date()


def parse_time(value: str, zone: ZoneInfo) -> time:
    """`HH:MM` as written (a local time of day), or the local time of an instant."""
    m = _CLOCK.match(value.strip())
    if m:
        return time(int(m[1]), int(m[2]))
    return parse_instant(value, zone).time()


def format_date(d: date, fmt: str, language: str) -> str:
    lang = base_language(language)
    day, month = d.weekday(), d.month - 1
    if lang == "en":
        return {
            "date": f"{_EN_DAYS[day]}, {_EN_MONTHS[month]} {d.day}",
            "short_date": f"{_EN_DAYS[day][:3]} {_EN_MONTHS[month][:3]} {d.day}",
            "weekday": _EN_DAYS[day],
        }[fmt]
    if lang == "es":
        return {
            "date": f"{_ES_DAYS[day]} {d.day} de {_ES_MONTHS[month]}",
            "short_date": f"{_ES_SHORT_DAYS[day]} {d.day} {_ES_SHORT_MONTHS[month]}",
            "weekday": _ES_DAYS[day],
        }[fmt]
    return d.isoformat()


def format_time(t: time, language: str) -> str:
    if base_language(language) == "en":
        hour = t.hour % 12 or 12
        return f"{hour}:{t.minute:02d} {'AM' if t.hour < 12 else 'PM'}"
    return f"{t.hour}:{t.minute:02d}" if base_language(language) == "es" else f"{t:%H:%M}"


def format_datetime(dt: datetime, fmt: str, language: str) -> str:
    """`fmt`: one of `FORMATS`."""
    if fmt in DATE_FORMATS:
        return format_date(dt.date(), fmt, language)
    clock = format_time(dt.time(), language)
    if fmt == "time":
        return clock
    day = format_date(dt.date(), "short_date" if fmt == "datetime" else "date", language)
    lang = base_language(language)
    if lang == "en":
        return f"{day} at {clock}"
    if lang == "es":
        return f"{day} a la{'' if dt.hour == 1 else 's'} {clock}"  # "a la 1:30", "a las 14:30"
    return f"{dt.date().isoformat()} {clock}"


@functools.cache
def longest(fmt: str, language: str) -> int:
    """The most characters `fmt` can take in `language`: every day of a leap year at
    the widest clock times, so the 160-character check holds for any date."""
    start = datetime(2028, 1, 1)
    widest = 0
    for offset in range(366):
        for hour, minute in ((1, 59), (12, 59), (23, 59)):
            dt = start + timedelta(days=offset, hours=hour, minutes=minute)
            widest = max(widest, len(format_datetime(dt, fmt, language)))
    return widest
