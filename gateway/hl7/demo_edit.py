"""Edits that make a sample message usable on a demo gateway (`smsgw hl7 send --phone
--shift-days --language --control-id-suffix`): the shared samples book appointments in
2020/2021 for numbers nobody can text. Pure text functions over one message whose
segments are separated by CR."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

# The TS/DTM fields (1-based, as HL7 numbers them) of the segments the gateway reads;
# inside a field every component or sub-component that reads as a timestamp moves (a TQ
# in SCH-11, ORC-7, OBR-27 or RXE-1 keeps its start in component 4, its end in 5).
# PID-7 (birth) stays: shifting a birth date changes nothing a demo wants.
TIMESTAMP_FIELDS: dict[str, tuple[int, ...]] = {
    "MSH": (7,),
    "EVN": (2, 3, 6),
    "SCH": (11,),
    "TQ1": (7, 8),
    "AIS": (4,),
    "AIG": (8,),
    "AIL": (6,),
    "AIP": (6,),
    "ORC": (7, 9, 15),
    "OBR": (6, 7, 8, 14, 22, 27, 36, 37),
    "OBX": (14, 19),
    "RXE": (1,),
    "RXD": (3,),
    "RXO": (1,),
    "TXA": (4, 6, 7),
    "SPM": (17, 18),
    "PV1": (44, 45),
}

# Where the appointment (or order) starts, most telling first.
_START_FIELDS = (("TQ1", 7), ("SCH", 11), ("AIS", 4), ("AIL", 6), ("AIP", 6), ("OBR", 7))

_TS = re.compile(r"^(\d{8})(\d{0,6}(?:\.\d{1,4})?)([+-]\d{4})?$")


class Separators:
    def __init__(self, message: str) -> None:
        if not message.startswith("MSH") or len(message) < 8:
            raise ValueError("not an HL7 message (no MSH segment first)")
        self.field = message[3]
        enc = message[4:8]
        self.component, self.repetition = enc[0], enc[1]
        self.subcomponent = enc[3] if len(enc) > 3 and enc[3] != self.field else "&"


def _fields(segment: str, seps: Separators) -> list[str]:
    return segment.split(seps.field)


def _index(name: str, n: int) -> int:
    """The list index of field n: MSH-1 is the separator itself, so MSH counts one less."""
    return n - 1 if name == "MSH" else n


def _segments(message: str) -> list[str]:
    return [s for s in message.split("\r") if s]


def _join(segments: list[str]) -> str:
    return "\r".join(segments) + "\r"


def _parse_ts(text: str) -> date | None:
    m = _TS.match(text)
    if not m or (m.group(2) and len(m.group(2).split(".")[0]) % 2):
        return None
    try:
        day = datetime.strptime(m.group(1), "%Y%m%d").date()
    except ValueError:
        return None
    return day if 1900 <= day.year <= 2200 else None


def _shift_one(text: str, days: int) -> str:
    day = _parse_ts(text)
    if day is None:
        return text
    return (day + timedelta(days=days)).strftime("%Y%m%d") + text[8:]


def _shift_field(value: str, days: int, seps: Separators) -> str:
    reps = value.split(seps.repetition)
    out = []
    for rep in reps:
        comps = [
            seps.subcomponent.join(_shift_one(s, days) for s in c.split(seps.subcomponent))
            for c in rep.split(seps.component)
        ]
        out.append(seps.component.join(comps))
    return seps.repetition.join(out)


def start_day(message: str) -> date | None:
    """The local date (in the timestamp's own offset) the appointment or order starts."""
    seps = Separators(message)
    for name, n in _START_FIELDS:
        for seg in _segments(message):
            if not seg.startswith(name + seps.field):
                continue
            f = _fields(seg, seps)
            i = _index(name, n)
            if i >= len(f):
                continue
            comps = f[i].split(seps.repetition)[0].split(seps.component)
            candidates = [comps[3], comps[0]] if name == "SCH" and len(comps) > 3 else comps
            for c in candidates:
                if day := _parse_ts(c):
                    return day
    return None


def shift_days(message: str, days_from_today: int, today: date) -> str:
    """Every timestamp moved by one whole number of days, so the start lands
    `days_from_today` after `today`; times of day, precision and offsets unchanged."""
    start = start_day(message)
    if start is None:
        raise ValueError("no appointment or order start (TQ1-7, SCH-11, AIS-4 ...) to shift")
    return shift_by(message, (today + timedelta(days=days_from_today) - start).days)


def shift_by(message: str, days: int) -> str:
    """Every timestamp of TIMESTAMP_FIELDS moved by `days` whole days."""
    seps = Separators(message)
    out = []
    for seg in _segments(message):
        name = seg[:3]
        f = _fields(seg, seps)
        for n in TIMESTAMP_FIELDS.get(name, ()):
            i = _index(name, n)
            if 1 < i < len(f):
                f[i] = _shift_field(f[i], days, seps)
        out.append(seps.field.join(f))
    return _join(out)


def _set_field(message: str, name: str, n: int, value: str) -> str:
    seps = Separators(message)
    out, found = [], False
    for seg in _segments(message):
        if seg.startswith(name + seps.field) or seg == name:
            found = True
            f = _fields(seg, seps)
            i = _index(name, n)
            f += [""] * (i + 1 - len(f))
            f[i] = value
            seg = seps.field.join(f)
        out.append(seg)
    if not found:
        raise ValueError(f"the message has no {name} segment")
    return _join(out)


def set_phone(message: str, e164: str) -> str:
    """PID-13 becomes this one number, a personal mobile (XTN-2 PRN, XTN-3 CP, XTN-12)."""
    if not re.fullmatch(r"\+[1-9]\d{6,14}", e164):
        raise ValueError("the phone number must be E.164, like +12025550147")
    seps = Separators(message)
    xtn = ["", "PRN", "CP"] + [""] * 8 + [e164]
    return _set_field(message, "PID", 13, seps.component.join(xtn))


def set_language(message: str, code: str) -> str:
    """PID-15 becomes this language (an ISO 639 code such as `es` or `spa`)."""
    if not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z]{2})?", code):
        raise ValueError("the language must be an ISO 639 code, like es or spa")
    return _set_field(message, "PID", 15, code)


def control_id(message: str) -> str:
    seps = Separators(message)
    f = _fields(_segments(message)[0], seps)
    return f[9] if len(f) > 9 else ""


def suffix_control_id(message: str, suffix: str) -> str:
    """MSH-10 with `suffix` appended, so a re-send is a new message to the listener."""
    return _set_field(message, "MSH", 10, control_id(message) + suffix)


def stamp_sent(message: str, now: datetime) -> str:
    """MSH-7 becomes `now` in MSH-7's own offset (none: this machine's local time) and
    precision. A shifted sample keeps its events' order only this way: the listener
    ignores an update older (by MSH-7) than the last one applied, and the samples' S15
    is dated after the S12 a demo sends next."""
    seps = Separators(message)
    f = _fields(_segments(message)[0], seps)
    old = f[6] if len(f) > 6 else ""
    m = _TS.match(old.split(seps.component)[0])
    if m is None:
        digits, offset = 14, ""
    else:
        digits, offset = 8 + len(m.group(2)), m.group(3) or ""
    if offset:
        sign = -1 if offset[0] == "-" else 1
        zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
        local = now.astimezone(zone)
    else:
        local = now.astimezone()
    text = local.strftime("%Y%m%d%H%M%S.%f")[:digits]
    return _set_field(message, "MSH", 7, text + offset)


def utc_now() -> datetime:
    return datetime.now(UTC)
