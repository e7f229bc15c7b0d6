"""Password policy (ASVS 6.2 / NIST 800-63B boundaries) and argon2id hashing."""

from __future__ import annotations

import random
import string
import unicodedata

import pytest
from argon2 import extract_parameters
from argon2.profiles import RFC_9106_LOW_MEMORY
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admin import passwords
from gateway.admin.passwords import WeakPassword, check

ALPHABET = string.ascii_letters + string.digits + "#!@$%&*^ "


def sized(n: int) -> str:
    """Random characters (seeded by the length), so only the length rule can refuse them."""
    rng = random.Random(n)
    return "".join(rng.choice(ALPHABET) for _ in range(n))


@pytest.mark.parametrize(
    ("length", "totp", "accepted"),
    [
        (7, True, False),
        (8, True, True),
        (8, False, False),
        (14, False, False),
        (15, False, True),
        (64, False, True),
        (200, False, True),
        (1024, False, True),
        (1025, False, False),
    ],
)
def test_length_boundaries(length: int, totp: bool, accepted: bool) -> None:
    if accepted:
        assert check(sized(length), totp_required=totp) == sized(length)
    else:
        with pytest.raises(WeakPassword, match="characters"):
            check(sized(length), totp_required=totp)


def test_any_unicode_counts_per_character_after_nfc() -> None:
    emoji = "🦉🌊🚑🩺🧬 grün über straße"
    assert check(emoji) == emoji
    decomposed = unicodedata.normalize("NFD", "é" * 15)
    assert len(decomposed) == 30
    with pytest.raises(WeakPassword):  # 15 characters once composed: too few distinct
        check(decomposed)
    composed = "éàüöñçøåßœ" + "ÉÀÜÖÑ"
    assert check(unicodedata.normalize("NFD", composed)) == composed


@pytest.mark.parametrize(
    "password",
    [
        "Password123456!",
        "password1234567890",
        "Hospital2026!!!!",
        "smsgw-gateway-2026",
        "aaaaaaaaaaaaaaaaaaaa",
        "abababababababababab",
        "qwertyuiopasdfghjkl",
        "1234567890123456",
        "zyxwvutsrqponmlkj",
        "correct horse battery staple",
        "IloveYou!IloveYou!",
    ],
)
def test_common_and_context_passwords_are_refused(password: str) -> None:
    with pytest.raises(WeakPassword):
        check(password)


def test_the_user_name_is_context() -> None:
    with pytest.raises(WeakPassword, match="user name"):
        check("margaretthatcher2026!", username="margaretthatcher")
    assert check("margaret sails the northern fjords", username="margaret")


def test_refusals_never_quote_the_password() -> None:
    for pw in ("Password123456!", "short", "Hospital2026!!!!"):
        with pytest.raises(WeakPassword) as e:
            check(pw)
        assert pw not in str(e.value) and "123456" not in str(e.value)


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_policy_either_accepts_or_explains(text: str) -> None:
    try:
        assert check(text) == unicodedata.normalize("NFC", text)
    except WeakPassword as e:
        assert str(e)


def test_argon2id_with_rfc_9106_parameters() -> None:
    digest = passwords.hash_password(sized(20))
    assert digest.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    params = extract_parameters(digest)
    assert params.memory_cost == RFC_9106_LOW_MEMORY.memory_cost
    assert params.time_cost == RFC_9106_LOW_MEMORY.time_cost
    assert params.hash_len == 32 and params.salt_len == 16
    assert passwords.hash_password(sized(20)) != digest, "salted"
    assert not passwords.needs_rehash(digest)


def test_no_truncation_and_normalised_verify() -> None:
    long_a = sized(300) + "A"
    long_b = sized(300) + "B"
    digest = passwords.hash_password(long_a)
    assert passwords.verify(digest, long_a)
    assert not passwords.verify(digest, long_b)
    composed = "Ünïcödé pässwörd fïnë"
    digest = passwords.hash_password(unicodedata.normalize("NFD", composed))
    assert passwords.verify(digest, composed)
    assert not passwords.verify("not a hash", composed)


async def test_verify_without_a_user_still_runs_argon2() -> None:
    assert not await passwords.verify_async(None, "anything at all here")
    digest = await passwords.hash_password_async(sized(16))
    assert await passwords.verify_async(digest, sized(16))
