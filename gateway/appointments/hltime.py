"""HL7 v2 date/times (DTM/TS) as Unix seconds: an offset when the sender gives one, the
interface's IANA zone when it does not (research §A6.5: Epic sends none).

`YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`; digits past the seconds that are not a
fraction (Epic's 16-digit MSH-7) are dropped, as python-hl7 does.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import UTC, datetime, timedelta, timezone

_DTM = re.compile(r"(\d{4,})(?:\.(\d{1,4}))?([+-]\d{4})?")


def parse(text: str, zone: str) -> float | None:
    """Unix seconds, or None if `text` is not an HL7 date/time."""
    m = _DTM.fullmatch(text.strip())
    if m is None:
        return None
    digits, fraction, offset = m.group(1)[:14], m.group(2), m.group(3)
    if len(digits) % 2:
        return None
    values = [int(digits[0:4])] + [int(digits[i : i + 2]) for i in range(4, len(digits), 2)]
    year, month, day, hour, minute, second = values + [1, 1, 0, 0, 0][len(values) - 1 :]
    try:
        tz = _offset(offset) if offset else zoneinfo.ZoneInfo(zone)
        moment = datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError:
        return None
    seconds = moment.timestamp()
    if fraction:
        seconds += int(fraction) / 10 ** len(fraction)
    return seconds


def _offset(text: str) -> timezone:
    sign = -1 if text[0] == "-" else 1
    hours, minutes = int(text[1:3]), int(text[3:5])
    if hours > 23 or minutes > 59:
        raise ValueError("offset out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def utc_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
