"""Quiet hours in the recipient's local time (MSG-10).

A recipient's zones: the contact's own time zone when staff or an import recorded one;
else the zones phonenumbers gives the number (an area code's zone); else every zone of
the number's country (`zone.tab`). With several zones the message may go only when it
is inside the window in all of them: the intersection of the local windows, the most
restrictive reading. All arithmetic is in UTC seconds with `zoneinfo`, so DST days are
23 or 25 hours long as they should be, and a window opening in a skipped hour opens
when the clock reaches it on the new offset.
"""

from __future__ import annotations

import functools
import math
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import phonenumbers
from phonenumbers import timezone as pn_timezone

from gateway.consent.purposes import Window

UNKNOWN = "Etc/Unknown"
_ZONE_TAB = Path("/usr/share/zoneinfo/zone.tab")
SEARCH_DAYS = 9  # a window that never opens within this many days never opens


def zone(name: str | None) -> zoneinfo.ZoneInfo:
    """The IANA zone `name`, or UTC when it is empty or unknown."""
    if name:
        try:
            return zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass
    return zoneinfo.ZoneInfo("UTC")


def valid_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


@functools.lru_cache(maxsize=1)
def _country_zones() -> dict[str, tuple[str, ...]]:
    """ISO country code -> its zones, from the system's `zone.tab` (empty if absent)."""
    table: dict[str, list[str]] = {}
    try:
        text = _ZONE_TAB.read_text(encoding="utf-8")
    except OSError:
        return {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) >= 3 and valid_zone(fields[2]):
            table.setdefault(fields[0], []).append(fields[2])
    return {k: tuple(sorted(v)) for k, v in table.items()}


@functools.lru_cache(maxsize=16384)
def zones_for_number(e164: str) -> tuple[str, ...]:
    """The zones a number may be in; ("UTC",) only when nothing at all is known."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return ("UTC",)
    zones = {z for z in pn_timezone.time_zones_for_number(parsed) if z != UNKNOWN and valid_zone(z)}
    region = phonenumbers.region_code_for_number(parsed)
    country = _country_zones().get(region or "", ())
    if country and zones - set(country):
        # A number of a shared plan (+1 800 spans the Caribbean, Guam and Samoa):
        # the zones of its own country, where it is registered.
        zones &= set(country)
    if zones:
        return tuple(sorted(zones))
    return country or ("UTC",)


def recipient_zones(e164: str, contact_zone: str | None) -> tuple[str, ...]:
    if contact_zone and valid_zone(contact_zone):
        return (contact_zone,)
    return zones_for_number(e164)


def _utc(day: date, minutes: int, zone: zoneinfo.ZoneInfo) -> float:
    local = datetime(day.year, day.month, day.day) + timedelta(minutes=minutes)
    return local.replace(tzinfo=zone).timestamp()


def _open_spans(window: Window, zone_name: str, at: float) -> list[tuple[float, float]]:
    """The window's opening spans in one zone, in UTC seconds, from the day before `at`."""
    zone = zoneinfo.ZoneInfo(zone_name)
    today = datetime.fromtimestamp(at, zone).date()
    spans = []
    for offset in range(-1, SEARCH_DAYS):
        day = today + timedelta(days=offset)
        start, end = _utc(day, window.start, zone), _utc(day, window.end, zone)
        if start < end:
            spans.append((start, end))
    return spans


def _intersect(
    a: list[tuple[float, float]], b: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


@functools.lru_cache(maxsize=4096)
def _next_open_minute(window: Window, zones: tuple[str, ...], minute: int) -> float | None:
    at = minute * 60.0
    spans = _open_spans(window, zones[0], at)
    for zone in zones[1:]:
        spans = _intersect(spans, _open_spans(window, zone, at))
    for start, end in spans:
        if end > at:
            return max(start, at)
    return None


def next_open(window: Window | None, zones: tuple[str, ...], at: float) -> float:
    """The first instant at or after `at` inside the window in every one of `zones`.

    Zones whose windows never overlap (a country wider than the window allows) fall back
    to the first zone alone rather than holding a message for ever."""
    if window is None:
        return at
    minute = int(at // 60)
    opening = _next_open_minute(window, zones, minute)
    if opening is None:
        opening = _next_open_minute(window, zones[:1], minute)
        assert opening is not None, "a window of one zone opens every day"
    # Windows and zone offsets are whole minutes: a minute's answer holds for its seconds.
    return max(opening, at)


def local_minutes(zone: str, at: float) -> int:
    """Minutes since local midnight at `at` (for checks and tests)."""
    # Whole seconds, floored: fromtimestamp rounds to the microsecond, and an instant a
    # fraction of one before midnight would read as the next day's 00:00.
    t = datetime.fromtimestamp(math.floor(at), UTC).astimezone(zoneinfo.ZoneInfo(zone))
    return t.hour * 60 + t.minute
