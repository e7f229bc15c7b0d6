"""A number already written as plain E.164 (`+` and digits), read without phonenumbers'
generic parse: the verdict `normalise_number` would give, or `UNSURE` when a cheap
check cannot prove it (the caller then takes the full path).

`phonenumbers.parse` of `+<code><national>` extracts the first 1-3 digits that are a
known country code, strips a national prefix when the country's `national_prefix_for_parsing`
matches the national part's start, and keeps leading zeros (Italy's). When no prefix
can match, the number it reads is the input's own digits, so the E.164 form is the
input itself; a prefix that may match is left to it. Validity is phonenumbers'
`is_valid_number` worked out from the same metadata with the patterns compiled once
per country code: the region is the first of the code's regions whose leading digits
match or whose types take the number, and the number is valid when the region's
general pattern and one of its types' patterns (each with its possible lengths) take
it. `tests/test_plain_e164.py` holds it to phonenumbers over generated numbers.
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


class _Code:
    """What one country code needs: the national prefix's pattern, its regions."""

    __slots__ = ("prefix", "regions")

    def __init__(self, prefix: re.Pattern[str] | None, regions: list[_Region]) -> None:
        self.prefix = prefix
        self.regions = regions


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
def _code(cc: int) -> _Code | None:
    region_codes = COUNTRY_CODE_TO_REGION_CODE[cc]
    main = PhoneMetadata.metadata_for_region_or_calling_code(cc, region_codes[0])
    if main is None:
        return None
    prefix = main.national_prefix_for_parsing
    regions: list[_Region] = []
    for code in region_codes:
        if code == REGION_CODE_FOR_NON_GEO_ENTITY:
            metadata = PhoneMetadata.metadata_for_nongeo_region(cc, None)
        else:
            metadata = PhoneMetadata.metadata_for_region(code.upper(), None)
        if metadata is None:
            return None  # phonenumbers skips it; too rare to mirror
        regions.append(_Region(metadata))
    return _Code(re.compile(prefix) if prefix else None, regions)


def _valid(code: _Code, national: str) -> bool:
    regions = code.regions
    if len(regions) == 1:
        return regions[0].takes(national)
    for region in regions:
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
    code = _code(cc)
    if code is None or (code.prefix is not None and code.prefix.match(national)):
        return UNSURE
    return raw if _valid(code, national) else None
