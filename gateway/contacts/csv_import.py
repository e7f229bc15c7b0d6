"""A contacts CSV, row by row: which column is which field, and what each cell means.

Columns are found by header name (with common aliases: Phone, Mobile, Lang, Site...)
or by an explicit mapping (field → header) chosen in the panel or on the console. A
cell is data, never code: a value is kept only if it has the shape of its field (a
number, a language code, an IANA zone, a key), so a spreadsheet formula (`=HYPERLINK(...)`)
in an attribute is refused as that line's error, and in a group name it is a name.
Errors name the line, a code and the column, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field

import phonenumbers

from gateway.consent.zones import valid_zone
from gateway.intake import normalise_number
from gateway.usecases import csv_reader
from gateway.usecases.csv_reader import LineError

FIELDS = (
    "number",
    "language",
    "time_zone",
    "age_band",
    "clinic",
    "preferences",
    "tags",
    "groups",
)
ALIASES: dict[str, str] = {
    **{name: name for name in FIELDS},
    **dict.fromkeys(
        ("phone", "phone_number", "mobile", "mobile_number", "msisdn", "cell", "telephone"),
        "number",
    ),
    **dict.fromkeys(("lang", "preferred_language", "locale"), "language"),
    **dict.fromkeys(("tz", "timezone", "zone"), "time_zone"),
    **dict.fromkeys(("age", "age_group", "ageband", "band"), "age_band"),
    **dict.fromkeys(("site", "location", "practice", "clinic_name"), "clinic"),
    **dict.fromkeys(("prefs", "preference", "interests", "topics"), "preferences"),
    **dict.fromkeys(("tag", "labels", "label"), "tags"),
    **dict.fromkeys(("group", "group_name", "list", "lists"), "groups"),
}
KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")  # as `audience.Key`
MAX_NAME = 100
_SPLIT = re.compile(r"[;|]")


@dataclass(frozen=True, slots=True)
class Options:
    """`columns`: field → header name, over the aliases. `region`: where national
    numbers are read (ISO 3166 code); `group`: a group id every row joins; `name`:
    the file's name, for the audit trail."""

    columns: Mapping[str, str] = dc_field(default_factory=dict)
    region: str | None = None
    group: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    number: str  # E.164
    values: dict[str, str]
    preferences: tuple[str, ...] | None
    tags: tuple[str, ...]
    groups: tuple[str, ...]


def region_ok(region: str) -> bool:
    return region in phonenumbers.SUPPORTED_REGIONS


def regions() -> list[str]:
    return sorted(phonenumbers.SUPPORTED_REGIONS)


def parse_mapping(text: str) -> dict[str, str]:
    """`number=Mobile,clinic=Site` → {"number": "Mobile", ...} (`csv_reader.parse_mapping`)."""
    return csv_reader.parse_mapping(text, FIELDS)


def columns(header: list[str], options: Options) -> tuple[dict[str, int], list[str]]:
    """Field → column index, and the headers no field takes (reported, not guessed)."""
    return csv_reader.map_columns(header, options.columns, ALIASES)


def key_of(text: str) -> str | None:
    """A cell as a key (an age band, a clinic, a tag): spaces become `-`, a trailing
    `+` becomes `-plus` ("65+" → "65-plus"); None if it still is not one."""
    text = re.sub(r"\s+", "-", text.strip())
    if text.endswith("+"):
        text = text[:-1] + "-plus"
    return text if KEY.fullmatch(text) else None


def _keys(text: str | None) -> tuple[str, ...] | None:
    """A `;`- or `|`-separated list of keys; None if one is not a key."""
    if text is None:
        return ()
    out: list[str] = []
    for part in filter(None, (p.strip() for p in _SPLIT.split(text))):
        k = key_of(part)
        if k is None:
            return None
        if k not in out:
            out.append(k)
    return tuple(out)


def row(
    line: int,
    fields: list[str],
    cols: Mapping[str, int],
    region: str,
    languages: tuple[str, ...],
) -> Row | LineError:
    """One record as a contact's attributes, or the first thing wrong with it."""

    def cell(name: str) -> str | None:
        i = cols.get(name)
        if i is None or i >= len(fields):
            return None
        return fields[i].strip() or None

    raw = cell("number")
    if raw is None:
        return LineError(line, "missing_value", "number")
    number = normalise_number(raw, region)
    if number is None:
        return LineError(line, "invalid_number", "number")
    values: dict[str, str] = {}
    if (lang := cell("language")) is not None:
        lang = lang.lower().replace("_", "-").split("-")[0]
        if lang not in languages:
            return LineError(line, "invalid_language", "language")
        values["language"] = lang
    if (zone := cell("time_zone")) is not None:
        if len(zone) > 64 or not valid_zone(zone):
            return LineError(line, "invalid_time_zone", "time_zone")
        values["time_zone"] = zone
    for name in ("age_band", "clinic"):
        if (text := cell(name)) is not None:
            k = key_of(text)
            if k is None:
                return LineError(line, f"invalid_{name}", name)
            values[name] = k
    prefs_cell = cell("preferences")
    prefs = _keys(prefs_cell)
    if prefs is None:
        return LineError(line, "invalid_preferences", "preferences")
    tags = _keys(cell("tags"))
    if tags is None:
        return LineError(line, "invalid_tags", "tags")
    groups: list[str] = []
    for name in filter(None, (p.strip() for p in _SPLIT.split(cell("groups") or ""))):
        if len(name) > MAX_NAME or not name.isprintable():
            return LineError(line, "invalid_groups", "groups")
        if name not in groups:
            groups.append(name)
    return Row(line, number, values, None if prefs_cell is None else prefs, tags, tuple(groups))
