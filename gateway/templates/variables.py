"""Typed template variables: what each may hold, how it is shown, how long it can be.

A template declares its variables, each with a type. The type decides what a value
must look like (checked at render: a notice whose values do not fit is refused, never
sent half-filled), how it is formatted (dates and times in the clinic's zone and the
reader's language), its longest rendering (for the 160-character check of MSG-3) and
what the lint allows: `provider` is the healthcare provider's name an exempt text
must carry; `drug` names a medication (only where the site allows drug names);
`note` is free text copied from an HL7 NTE segment, which no template may take.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from gateway.templates import dates


class VarType(enum.StrEnum):
    PROVIDER = "provider"  # the healthcare provider's name (clinic, hospital, practitioner)
    TEXT = "text"  # a short label: location, pharmacy, department
    DATETIME = "datetime"  # an instant, shown in the clinic's zone
    DATE = "date"  # YYYY-MM-DD, or an instant's local date
    TIME = "time"  # HH:MM, or an instant's local time
    SHORT_CODE = "short_code"  # the appointment's reply code ("STOP 1234")
    URL = "url"  # a portal link
    PHONE = "phone"  # the clinic's number to call (never the patient's)
    DRUG = "drug"  # a medication name: refused unless the site allows drug names
    NOTE = "note"  # free text from an NTE segment: always refused by the lint


FORMATS_OF: dict[VarType, tuple[str, ...]] = {
    VarType.DATETIME: dates.FORMATS,
    VarType.DATE: dates.DATE_FORMATS,
    VarType.TIME: ("time",),
}
DEFAULT_FORMAT = {VarType.DATETIME: "datetime", VarType.DATE: "date", VarType.TIME: "time"}
DEFAULT_MAX = {
    VarType.PROVIDER: 24,
    VarType.TEXT: 24,
    VarType.SHORT_CODE: 4,
    VarType.URL: 40,
    VarType.PHONE: 16,
    VarType.DRUG: 24,
    VarType.NOTE: 160,
}
MAX_LENGTH = 160
# The names the clinical parts fill, with their types: a declaration may leave the
# type out for these.
WELL_KNOWN: dict[str, VarType] = {
    "clinic": VarType.PROVIDER,
    "provider": VarType.PROVIDER,
    "location": VarType.TEXT,
    "pharmacy": VarType.TEXT,
    "start": VarType.DATETIME,
    "date": VarType.DATE,
    "time": VarType.TIME,
    "short_code": VarType.SHORT_CODE,
    "portal_url": VarType.URL,
    "phone": VarType.PHONE,
    "medication": VarType.DRUG,
    "note": VarType.NOTE,
}
# Keys of a notice's variables that are not template variables.
RESERVED = frozenset({"time_zone", "split_key"})
_SHORT_CODE = re.compile(r"^[A-Za-z0-9]{1,8}$")
_URL = re.compile(r"^https?://[^\s<>\"{}]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 ()./-]{2,24}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadVariable(ValueError):
    """A value that does not fit its declaration; the message names the variable, never
    the value."""


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    type: VarType
    max_length: int | None = None  # text types; None: the type's default
    default: str | None = None  # the text when neither the notice nor the site give one

    @property
    def limit(self) -> int:
        return self.max_length or DEFAULT_MAX.get(self.type, MAX_LENGTH)

    def widest(self, fmt: str | None, language: str) -> int:
        """The most characters this placeholder can render to."""
        if self.type in FORMATS_OF:
            return dates.longest(fmt or DEFAULT_FORMAT[self.type], language)
        return self.limit

    def render(self, value: str, fmt: str | None, language: str, zone: ZoneInfo) -> str:
        """The value as the text shows it; `BadVariable` if it does not fit."""
        try:
            if self.type is VarType.DATETIME:
                when = dates.parse_instant(value, zone)
                return dates.format_datetime(when, fmt or "datetime", language)
            if self.type is VarType.DATE:
                return dates.format_date(dates.parse_date(value, zone), fmt or "date", language)
            if self.type is VarType.TIME:
                return dates.format_time(dates.parse_time(value, zone), language)
        except (ValueError, OverflowError, OSError):  # BadValue is a ValueError
            raise BadVariable(f"{self.name}: not a {self.type.value} value") from None
        text = _CONTROL.sub(" ", value).strip()
        if not text:
            raise BadVariable(f"{self.name}: empty")
        if len(text) > self.limit:
            raise BadVariable(f"{self.name}: longer than its {self.limit} characters")
        checks = {VarType.SHORT_CODE: _SHORT_CODE, VarType.URL: _URL, VarType.PHONE: _PHONE}
        pattern = checks.get(self.type)
        if pattern is not None and not pattern.match(text):
            raise BadVariable(f"{self.name}: not a {self.type.value.replace('_', ' ')}")
        return text


def fits(name: str, value: str) -> bool:
    """Whether `value` fits the default length of the well-known variable `name` (what
    the built-in templates declare). A producer leaves a longer label out rather than
    have every render of its notices refused: the text then says the site's value or
    the declared default (`clinic` the site's name, `location` "the clinic")."""
    kind = WELL_KNOWN.get(name)
    if kind is None or kind in FORMATS_OF:
        return True
    return len(_CONTROL.sub(" ", value).strip()) <= DEFAULT_MAX.get(kind, MAX_LENGTH)


def declare(raw: Mapping[str, Mapping[str, object]]) -> tuple[Variable, ...]:
    """Declarations from `{name: {"type": ..., "max_length": ...}}`; ValueError naming
    the variable for an unknown type or a bad length."""
    out = []
    for name, spec in raw.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name) or name in RESERVED:
            raise ValueError(f"{name}: a variable name is lower case letters, digits and _")
        kind = spec.get("type") or WELL_KNOWN.get(name)
        if kind is None:
            raise ValueError(f"{name}: give its type (one of {', '.join(VarType)})")
        try:
            var_type = VarType(str(kind))
        except ValueError:
            raise ValueError(f"{name}: type is one of {', '.join(VarType)}") from None
        max_length = spec.get("max_length")
        if max_length is not None:
            if var_type in FORMATS_OF:
                raise ValueError(f"{name}: a {var_type.value} has no max_length")
            if not isinstance(max_length, int) or not 1 <= max_length <= MAX_LENGTH:
                raise ValueError(f"{name}: max_length is 1 to {MAX_LENGTH}")
        default = spec.get("default")
        variable = Variable(name, var_type, max_length)
        if default is not None:
            if var_type in FORMATS_OF or var_type in (VarType.DRUG, VarType.NOTE):
                raise ValueError(f"{name}: a {var_type.value} has no default")
            if not isinstance(default, str) or not 0 < len(default) <= variable.limit:
                raise ValueError(f"{name}: the default is 1 to {variable.limit} characters")
            variable = Variable(name, var_type, max_length, default)
        out.append(variable)
    return tuple(out)


def as_json(variables: tuple[Variable, ...]) -> dict[str, dict[str, object]]:
    return {
        v.name: {
            "type": v.type.value,
            **({"max_length": v.max_length} if v.max_length else {}),
            **({"default": v.default} if v.default is not None else {}),
        }
        for v in variables
    }
