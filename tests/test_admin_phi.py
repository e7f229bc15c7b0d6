"""Masking of numbers and bodies in the panel."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.usecases.masking import DOT, mask_body, mask_number


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        ("+15551234567", "+1 555 ••• ••67"),
        ("+12025550147", "+1 202 ••• ••47"),
        ("+447700900123", "+44 770 ••• ••23"),
        ("+4915123456789", "+49 151 ••• •••89"),
        ("+3612345", "+36 •••••"),
    ],
)
def test_mask_number_keeps_country_code_first_three_and_last_two(e164: str, masked: str) -> None:
    assert mask_number(e164) == masked


@given(st.integers(min_value=10**7, max_value=10**14 - 1))
def test_mask_never_shows_more_than_five_national_digits(n: int) -> None:
    e164 = f"+1{n}"
    masked = mask_number(e164)
    try:
        national = str(phonenumbers.parse(e164, None).national_number)
    except phonenumbers.NumberParseException:
        national = e164[1:]
    shown = sum(ch.isdigit() for ch in masked.split(" ", 1)[-1])
    assert shown <= 5
    assert masked.count(DOT) == max(0, len(national) - 5) or len(national) < 6


def test_mask_body_shows_only_the_length() -> None:
    assert mask_body("potassium 6.9") == "•••••• (13 characters)"
