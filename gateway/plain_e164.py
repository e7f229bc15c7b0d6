"""A number already written as plain E.164 (`+` and digits), read without phonenumbers'
generic parse: the verdict `normalise_number` would give, or `UNSURE` when a cheap
check cannot prove it (the caller then takes the full path).

`phonenumbers.parse` of `+<code><national>` extracts the first 1-3 digits that are
a known country code, strips a national prefix when the country's
`national_prefix_for_parsing` matches the national part's start, and keeps leading
zeros (Italy's). When no prefix can match, the number it reads is the input's own
digits, so the E.164 form is the input itself; a prefix that may match is left to it.
Validity is phonenumbers' `is_valid_number` worked out from the same metadata, each
region's patterns compiled once, when a number first needs them: the region is the
first of the code's regions whose leading digits match or whose types take the number
(the only one if the code has one), and the number is valid when the region's general
pattern and one of its types' patterns (each with its possible lengths) take it.
`tests/test_plain_e164.py` holds it to phonenumbers over generated numbers.
"""

from __future__ import annotations

import enum
import functools
import re
from typing import Final

from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    REGION_CODE_FOR_NON_GEO_ENTITY,
    PhoneMetadata,
    PhoneNumberDesc,
)


class Unsure(enum.Enum):
    UNSURE = 0


UNSURE: Final = Unsure.UNSURE
_PLAIN = re.compile(r"\+[1-9][0-9]{3,16}", re.ASCII)
# phonenumbers' own bounds on a national significant number.
_MIN_NSN, _MAX_NSN = 2, 17
_Pattern = tuple[frozenset[int], re.Pattern[str]]


class _Region:
    """One region's patterns: its leading digits, its general pattern, its types'."""

    __slots__ = ("general", "leading", "types")

    def __init__(self, metadata: PhoneMetadata) -> None:
        leading = metadata.leading_digits
        self.leading = None if leading is None else re.compile(leading)
        self.general = _pattern(metadata.general_desc)
        descs = [
            metadata.premium_rate,
            metadata.toll_free,
            metadata.shared_cost,
            metadata.voip,
            metadata.personal_number,
            metadata.pager,
            metadata.uan,
            metadata.voicemail,
            metadata.fixed_line,
        ]
        if not metadata.same_mobile_and_fixed_line_pattern:
            descs.append(metadata.mobile)
        self.types = [p for p in map(_pattern, descs) if p is not None]

    def takes(self, national: str) -> bool:
        """phonenumbers' `_number_type_helper(...) != UNKNOWN`."""
        if self.general is None or not _matches(self.general, national):
            return False
        return any(_matches(p, national) for p in self.types)


def _pattern(desc: PhoneNumberDesc | None) -> _Pattern | None:
    if desc is None or not desc.national_number_pattern:
        return None
    return frozenset(desc.possible_length or ()), re.compile(desc.national_number_pattern)


def _matches(pattern: _Pattern, national: str) -> bool:
    lengths, regex = pattern
    if lengths and len(national) not in lengths:
        return False
    return regex.fullmatch(national) is not None


@functools.cache
def _prefix(cc: int) -> re.Pattern[str] | Unsure | None:
    """The national prefix's pattern `parse` tries for this country code."""
    main = PhoneMetadata.metadata_for_region_or_calling_code(cc, COUNTRY_CODE_TO_REGION_CODE[cc][0])
    if main is None:
        return UNSURE
    prefix = main.national_prefix_for_parsing
    return re.compile(prefix) if prefix else None


# Built as numbers need them: +1 has 25 regions, whose patterns (and phonenumbers'
# metadata) would take 25 ms to load at once, while a US number needs only the first.
@functools.cache
def _region(cc: int, code: str) -> _Region | None:
    if code == REGION_CODE_FOR_NON_GEO_ENTITY:
        metadata = PhoneMetadata.metadata_for_nongeo_region(cc, None)
    else:
        metadata = PhoneMetadata.metadata_for_region(code.upper(), None)
    return None if metadata is None else _Region(metadata)


def _valid(cc: int, national: str) -> bool | Unsure:
    """phonenumbers' `is_valid_number`: the region, then its types."""
    codes = COUNTRY_CODE_TO_REGION_CODE[cc]
    if len(codes) == 1:
        only = _region(cc, codes[0])
        return UNSURE if only is None else only.takes(national)
    for code in codes:
        region = _region(cc, code)
        if region is None:
            return UNSURE  # phonenumbers skips it; too rare to mirror
        if region.leading is not None:
            if region.leading.match(national):
                return region.takes(national)
        elif region.takes(national):
            return True
    return False


def read_plain_e164(raw: str) -> str | Unsure | None:
    """`raw` itself if it is a valid number in plain E.164, None if it is not a valid
    number, `UNSURE` if only phonenumbers' full parse can tell."""
    if _PLAIN.fullmatch(raw) is None:
        return UNSURE
    for width in (1, 2, 3):
        cc = int(raw[1 : 1 + width])
        if cc in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return UNSURE  # parse would read it as a national number of the default region
    national = raw[1 + width :]
    if not _MIN_NSN <= len(national) <= _MAX_NSN:
        return UNSURE
    prefix = _prefix(cc)
    if prefix is UNSURE or (prefix is not None and prefix.match(national)):
        return UNSURE
    valid = _valid(cc, national)
    if valid is UNSURE:
        return UNSURE
    return raw if valid else None
