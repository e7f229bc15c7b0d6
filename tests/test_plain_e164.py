"""The plain-E.164 fast path gives phonenumbers' verdict whenever it gives one."""

from __future__ import annotations

import phonenumbers
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.intake import _DIALABLE, normalise_number
from gateway.plain_e164 import UNSURE, read_plain_e164

CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)
REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
# Valid numbers of every region and of the non-geographic codes, in E.164.
EXAMPLES = sorted(
    {
        phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)
        for n in [
            *(phonenumbers.example_number_for_type(r, t) for r in REGIONS for t in range(11)),
            *(
                phonenumbers.example_number_for_non_geo_entity(c)
                for c in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS
            ),
        ]
        if n is not None
    }
)


def full_path(raw: str, region: str) -> str | None:
    """`normalise_number` as it was before the fast path: phonenumbers throughout."""
    raw = raw.strip(" ")
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if parsed.extension or not phonenumbers.is_valid_number(parsed):
        return None
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def _mutate(number: str, at: int, digit: str, how: int) -> str:
    at = 1 + at % (len(number) - 1)
    if how == 0:
        return number[:at] + digit + number[at + 1 :]  # a digit changed
    if how == 1:
        return number[:at] + digit + number[at:]  # one more
    if how == 2:
        return number[:at] + number[at + 1 :]  # one fewer
    return number + digit * (how - 2)  # longer


plain = st.builds(
    lambda cc, rest: f"+{cc}{rest}",
    st.sampled_from(CODES),
    st.text("0123456789", max_size=18),
)
near_valid = st.builds(
    _mutate,
    st.sampled_from(EXAMPLES),
    st.integers(0, 20),
    st.sampled_from("0123456789"),
    st.integers(0, 6),
)
odd = st.text("+0123456789 -()./x#*\u0663\uff0b\n", max_size=24).map(lambda s: s[:64])
numbers = st.one_of(plain, near_valid, st.sampled_from(EXAMPLES), odd)


@settings(max_examples=800, deadline=None)
@given(numbers, st.sampled_from(["US", "GB", "DE", "IT", "FR", "BR", "IN", "GG", "RU"]))
@example("+442079460000", "GB")
@example("+4402079460000", "GB")  # a national prefix inside: left to phonenumbers
@example("+390612345678", "IT")  # Italy's leading zero
@example("+11234567890", "US")  # NANPA's national prefix 1
@example("+447781123456", "GB")  # shared by GB, GG, JE, IM
@example("+79123456789", "RU")  # shared by RU and KZ
@example("+80012345678", "GB")  # non-geographic
@example("+999123456", "GB")  # no such code
@example("+0123456789", "GB")
def test_the_fast_path_agrees_with_phonenumbers(raw: str, region: str) -> None:
    verdict = read_plain_e164(raw.strip(" "))
    if verdict is not UNSURE:
        assert verdict == full_path(raw, region)
    dialable = _DIALABLE.fullmatch(raw.strip(" ")) is not None
    assert normalise_number.__wrapped__(raw, region) == (
        full_path(raw, region) if dialable else None
    )


def test_the_fast_path_answers_for_nearly_every_valid_number() -> None:
    unsure = [n for n in EXAMPLES if read_plain_e164(n) is UNSURE]
    assert len(EXAMPLES) > 1000
    assert len(unsure) < len(EXAMPLES) // 50, unsure[:20]
    assert all(read_plain_e164(n) == n for n in EXAMPLES if n not in unsure)
