from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.text import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    BodyTooLong,
    Encoding,
    SegmentPlan,
    choose_encoding,
    decode_gsm7_septets,
    decode_ucs2,
    encode_gsm7_septets,
    encode_ucs2,
    pack_septets,
    septet_length,
    split,
    ucs2_units,
    unpack_septets,
)

# Unicode's GSM0338.TXT mapping for every code that is not the same as ASCII
# (0x09 is capital C cedilla, as in the ETSI table).
SPEC_NON_ASCII = {
    0x00: 0x0040, 0x01: 0x00A3, 0x02: 0x0024, 0x03: 0x00A5, 0x04: 0x00E8, 0x05: 0x00E9,
    0x06: 0x00F9, 0x07: 0x00EC, 0x08: 0x00F2, 0x09: 0x00C7, 0x0A: 0x000A, 0x0B: 0x00D8,
    0x0C: 0x00F8, 0x0D: 0x000D, 0x0E: 0x00C5, 0x0F: 0x00E5, 0x10: 0x0394, 0x11: 0x005F,
    0x12: 0x03A6, 0x13: 0x0393, 0x14: 0x039B, 0x15: 0x03A9, 0x16: 0x03A0, 0x17: 0x03A8,
    0x18: 0x03A3, 0x19: 0x0398, 0x1A: 0x039E, 0x1C: 0x00C6, 0x1D: 0x00E6, 0x1E: 0x00DF,
    0x1F: 0x00C9, 0x24: 0x00A4, 0x40: 0x00A1, 0x5B: 0x00C4, 0x5C: 0x00D6, 0x5D: 0x00D1,
    0x5E: 0x00DC, 0x5F: 0x00A7, 0x60: 0x00BF, 0x7B: 0x00E4, 0x7C: 0x00F6, 0x7D: 0x00F1,
    0x7E: 0x00FC, 0x7F: 0x00E0,
}  # fmt: skip
SPEC_EXTENSION = {
    0x0A: 0x000C, 0x14: 0x005E, 0x28: 0x007B, 0x29: 0x007D, 0x2F: 0x005C,
    0x3C: 0x005B, 0x3D: 0x007E, 0x3E: 0x005D, 0x40: 0x007C, 0x65: 0x20AC,
}  # fmt: skip

GSM_CHARS = sorted({c for i, c in enumerate(GSM7_BASIC) if i != 0x1B} | set(GSM7_EXTENSION))
EMOJI = "\U0001f600"


def _chunks(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Texts from a few characters up to several segments long."""
    return st.lists(st.text(alphabet, min_size=1, max_size=60), max_size=30).map("".join)


gsm_text = _chunks(st.sampled_from(GSM_CHARS))
any_text = st.one_of(
    st.text(),
    _chunks(st.characters()),
    _chunks(st.sampled_from(["a", "€", "ж", EMOJI, "\U0001d11e", " "])),
    _chunks(st.one_of(st.sampled_from(GSM_CHARS), st.characters(min_codepoint=0x10000))),
)
with_surrogate_code_points = _chunks(
    st.one_of(st.sampled_from(["a", "\ud83d", "\ude00", EMOJI]), st.characters(categories=["Cs"]))
)


def _budget(encoding: Encoding, part: str) -> int:
    if encoding is Encoding.GSM7:
        septets = encode_gsm7_septets(part)
        assert septet_length(part) == len(septets)
        return len(septets)
    octets = encode_ucs2(part)
    assert ucs2_units(part) * 2 == len(octets)
    return len(octets) // 2


def _limits(encoding: Encoding) -> tuple[int, int]:
    return (160, 153) if encoding is Encoding.GSM7 else (70, 67)


# Alphabet tables


def test_basic_table_matches_ts_23_038() -> None:
    assert len(GSM7_BASIC) == 128
    for code in range(128):
        if code == 0x1B:
            continue
        expected = SPEC_NON_ASCII.get(code, code)
        assert ord(GSM7_BASIC[code]) == expected, hex(code)


def test_extension_table_matches_ts_23_038() -> None:
    assert {code: ord(char) for char, code in GSM7_EXTENSION.items()} == SPEC_EXTENSION


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Encoding.GSM7),
        ("Hello @£$¥ {[~]} €", Encoding.GSM7),
        ("ÄÖÑÜ§¿äöñüà ΔΦΓΛΩΠΨΣΘΞ\n\r\x0c", Encoding.GSM7),
        ("ç", Encoding.UCS2),  # only capital Ç is in the table
        ("`", Encoding.UCS2),
        ("\x1b", Encoding.UCS2),  # the escape placeholder is not a character
        ("Привет", Encoding.UCS2),
        (f"ok {EMOJI}", Encoding.UCS2),
    ],
)
def test_choose_encoding(text: str, expected: Encoding) -> None:
    assert choose_encoding(text) is expected


def test_lengths() -> None:
    assert septet_length("a€b") == 4
    assert septet_length("{}") == 4
    assert ucs2_units(f"ж{EMOJI}") == 3
    with pytest.raises(ValueError, match="GSM 7-bit"):
        septet_length("ж")


# Published packing vectors


@pytest.mark.parametrize(
    ("text", "packed_hex"),
    [
        ("hellohello", "E8329BFD4697D9EC37"),
        ("Hello", "C8329BFD06"),
        ("12345678", "31D98C56B3DD70"),
    ],
)
def test_pack_vectors(text: str, packed_hex: str) -> None:
    septets = encode_gsm7_septets(text)
    assert pack_septets(septets).hex().upper() == packed_hex
    assert unpack_septets(bytes.fromhex(packed_hex), len(text)) == septets


def test_gsm7_septet_vectors() -> None:
    assert encode_gsm7_septets("@£$") == b"\x00\x01\x02"
    assert encode_gsm7_septets("a€|") == b"\x61\x1b\x65\x1b\x40"
    assert decode_gsm7_septets(b"\x1b\x65\x1b\x0a") == "€\x0c"


def test_gsm7_lenient_decoding() -> None:
    assert decode_gsm7_septets(b"\x1b\x41") == "A"  # undefined extension code
    assert decode_gsm7_septets(b"\x41\x1b") == "A "  # trailing lone escape
    assert decode_gsm7_septets(b"\x1b\x1b\x41") == " A"  # reserved escape-escape
    with pytest.raises(ValueError, match="septet"):
        decode_gsm7_septets(b"\x80")


def test_encode_gsm7_rejects_unrepresentable_without_echoing_text() -> None:
    with pytest.raises(ValueError, match="position 3") as caught:
        encode_gsm7_septets("abcжsecret")
    assert "secret" not in str(caught.value)


@given(st.text(st.sampled_from([*GSM7_BASIC, *GSM7_EXTENSION, "`", "ж", "\x7f", "\U0001f600"])))
def test_gsm7_encoding_matches_the_tables_character_by_character(text: str) -> None:
    """The translate-based encoder against the definition: table lookups per character."""
    expected = bytearray()
    for position, char in enumerate(text):
        if char in GSM7_EXTENSION:
            expected += bytes((0x1B, GSM7_EXTENSION[char]))
        elif char in GSM7_BASIC and GSM7_BASIC.index(char) != 0x1B:
            expected.append(GSM7_BASIC.index(char))
        else:
            with pytest.raises(ValueError, match=f"position {position} "):
                encode_gsm7_septets(text)
            return
    assert encode_gsm7_septets(text) == bytes(expected)


def test_pack_argument_checks() -> None:
    with pytest.raises(ValueError, match="fill_bits"):
        pack_septets(b"\x01", fill_bits=7)
    with pytest.raises(ValueError, match="fill_bits"):
        unpack_septets(b"\x01", 1, fill_bits=-1)
    with pytest.raises(ValueError, match="0x7F"):
        pack_septets(b"\x80")
    with pytest.raises(ValueError, match="need 2 octets"):
        unpack_septets(b"\x01", 2)


# Segment vectors


@pytest.mark.parametrize(
    ("text", "encoding", "segments", "units"),
    [
        ("", Encoding.GSM7, 1, 0),
        ("a" * 160, Encoding.GSM7, 1, 160),
        ("a" * 161, Encoding.GSM7, 2, 161),
        ("a" * 306, Encoding.GSM7, 2, 306),
        ("a" * 307, Encoding.GSM7, 3, 307),
        ("€" * 80, Encoding.GSM7, 1, 160),
        ("€" * 80 + "a", Encoding.GSM7, 2, 161),
        ("ж" * 70, Encoding.UCS2, 1, 70),
        ("ж" * 71, Encoding.UCS2, 2, 71),
        ("ж" * 134, Encoding.UCS2, 2, 134),
        ("ж" * 135, Encoding.UCS2, 3, 135),
        (EMOJI * 35, Encoding.UCS2, 1, 70),
        (EMOJI * 36, Encoding.UCS2, 2, 72),
    ],
)
def test_segment_counts(text: str, encoding: Encoding, segments: int, units: int) -> None:
    plan = split(text)
    assert (plan.encoding, plan.segments, plan.units) == (encoding, segments, units)
    assert plan.segments == len(plan.parts)


def test_empty_text_is_one_empty_part() -> None:
    assert split("") == SegmentPlan(Encoding.GSM7, ("",), 0)


def test_extension_char_not_split_at_153() -> None:
    plan = split("a" * 152 + "€" + "b" * 10)
    assert plan.parts == ("a" * 152, "€" + "b" * 10)


def test_emoji_not_split_at_67() -> None:
    plan = split("a" * 66 + EMOJI + "b" * 10)
    assert plan.parts == ("a" * 66, EMOJI + "b" * 10)
    assert split("a" * 65 + EMOJI + "b" * 10).parts == ("a" * 65 + EMOJI, "b" * 10)


def test_forced_ucs2_uses_ucs2_limits() -> None:
    plan = split("a" * 71, encoding=Encoding.UCS2)
    assert (plan.encoding, plan.parts) == (Encoding.UCS2, ("a" * 67, "a" * 4))


def test_forced_gsm7_rejects_unrepresentable_without_echoing_text() -> None:
    with pytest.raises(ValueError, match="GSM 7-bit") as caught:
        split("Пациент secret", encoding=Encoding.GSM7)
    assert "secret" not in str(caught.value)


def test_body_too_long_message_and_attributes() -> None:
    with pytest.raises(BodyTooLong) as caught:
        split("x" * (153 * 11 + 1), max_segments=10)
    assert str(caught.value) == "body needs 12 segments, the limit is 10"
    assert (caught.value.segments, caught.value.limit) == (12, 10)
    assert "x" not in str(caught.value)
    assert isinstance(caught.value, ValueError)
    copy = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 - our own bytes
    assert (copy.segments, copy.limit, str(copy)) == (12, 10, str(caught.value))


def test_concatenation_caps_at_255_segments() -> None:
    assert split("a" * 153 * 255).segments == 255
    with pytest.raises(BodyTooLong) as caught:
        split("a" * (153 * 255 + 1))
    assert (caught.value.segments, caught.value.limit) == (256, 255)
    with pytest.raises(ValueError, match="255"):
        split("a", max_segments=256)


# Properties


def _check_plan(text: str, plan: SegmentPlan) -> None:
    assert "".join(plan.parts) == text
    single, per_part = _limits(plan.encoding)
    budgets = [_budget(plan.encoding, part) for part in plan.parts]
    assert plan.units == sum(budgets)
    if plan.units <= single:
        assert plan.parts == (text,)
    else:
        assert all(0 < budget <= per_part for budget in budgets)


def _check_greedy(plan: SegmentPlan) -> None:
    _, per_part = _limits(plan.encoding)
    for part, following in zip(plan.parts, plan.parts[1:], strict=False):
        first = following[0]
        assert _budget(plan.encoding, part) + _budget(plan.encoding, first) > per_part


@given(any_text)
def test_split_any_text(text: str) -> None:
    plan = split(text)
    assert plan.encoding is choose_encoding(text)
    _check_plan(text, plan)
    _check_greedy(plan)
    if plan.encoding is Encoding.UCS2:
        for part in plan.parts:
            octets = encode_ucs2(part)
            assert not 0xDC00 <= int.from_bytes(octets[:2]) <= 0xDFFF
            assert not 0xD800 <= int.from_bytes(octets[-2:]) <= 0xDBFF


@given(gsm_text)
def test_split_gsm_text(text: str) -> None:
    plan = split(text)
    assert plan.encoding is Encoding.GSM7
    _check_plan(text, plan)
    _check_greedy(plan)
    assert b"".join(encode_gsm7_septets(p) for p in plan.parts) == encode_gsm7_septets(text)


@given(gsm_text)
def test_split_gsm_text_as_ucs2(text: str) -> None:
    plan = split(text, encoding=Encoding.UCS2)
    assert plan.encoding is Encoding.UCS2
    _check_plan(text, plan)
    _check_greedy(plan)


@given(with_surrogate_code_points)
def test_split_keeps_surrogate_code_point_pairs_together(text: str) -> None:
    plan = split(text)
    _check_plan(text, plan)
    for part, following in zip(plan.parts, plan.parts[1:], strict=False):
        assert not ("\ud800" <= part[-1] <= "\udbff" and "\udc00" <= following[0] <= "\udfff")


@given(any_text, st.integers(min_value=0, max_value=12))
def test_body_too_long_exactly_when_over_limit(text: str, max_segments: int) -> None:
    unlimited = split(text)
    if unlimited.segments > max_segments:
        with pytest.raises(BodyTooLong) as caught:
            split(text, max_segments=max_segments)
        assert (caught.value.segments, caught.value.limit) == (unlimited.segments, max_segments)
    else:
        assert split(text, max_segments=max_segments) == unlimited


@given(st.binary().map(lambda b: bytes(x & 0x7F for x in b)), st.integers(0, 6))
def test_pack_unpack_round_trip(septets: bytes, fill_bits: int) -> None:
    packed = pack_septets(septets, fill_bits)
    assert len(packed) == (7 * len(septets) + fill_bits + 7) // 8
    assert int.from_bytes(packed, "little") == int.from_bytes(pack_septets(septets), "little") << (
        fill_bits
    )
    assert unpack_septets(packed, len(septets), fill_bits) == septets
    assert unpack_septets(packed + b"\xff", len(septets), fill_bits) == septets


@given(st.binary(max_size=40), st.integers(0, 6))
def test_pack_matches_bit_by_bit_reference(data: bytes, fill_bits: int) -> None:
    septets = bytes(x & 0x7F for x in data)
    bits = [0] * fill_bits + [(s >> i) & 1 for s in septets for i in range(7)]
    bits += [0] * (-len(bits) % 8)
    expected = bytes(sum(bits[o + i] << i for i in range(8)) for o in range(0, len(bits), 8))
    assert pack_septets(septets, fill_bits) == expected


@given(gsm_text)
def test_gsm7_round_trip(text: str) -> None:
    septets = encode_gsm7_septets(text)
    assert len(septets) == septet_length(text)
    assert all(s <= 0x7F for s in septets)
    assert decode_gsm7_septets(septets) == text
    packed = pack_septets(septets, 1)
    assert decode_gsm7_septets(unpack_septets(packed, len(septets), 1)) == text


@given(st.binary(max_size=64).map(lambda b: bytes(x & 0x7F for x in b)))
def test_gsm7_decode_never_fails_on_septets(septets: bytes) -> None:
    assert choose_encoding(decode_gsm7_septets(septets)) is Encoding.GSM7


@given(any_text.filter(lambda t: not any("\ud800" <= c <= "\udfff" for c in t)))
def test_ucs2_round_trip(text: str) -> None:
    """Text without lone surrogate code points (i.e. valid Unicode) round-trips exactly."""
    encoded = encode_ucs2(text)
    assert encoded == text.encode("utf-16-be")
    assert decode_ucs2(encoded) == text


def test_ucs2_lone_surrogates_become_replacement_char() -> None:
    assert decode_ucs2(bytes.fromhex("d83d0041")) == "\ufffdA"
    assert decode_ucs2(bytes.fromhex("de00d83dde00")) == "\ufffd" + EMOJI
    assert decode_ucs2(bytes.fromhex("004100")) == "A\ufffd"
    assert encode_ucs2("a\ud83d") == bytes.fromhex("0061fffd")
    assert encode_ucs2("\ud83d\ude00") == bytes.fromhex("d83dde00")


@given(st.binary(max_size=64))
def test_ucs2_decode_never_fails(data: bytes) -> None:
    decoded = decode_ucs2(data)
    assert not any("\ud800" <= char <= "\udfff" for char in decoded)
    assert ucs2_units(decoded) == (len(data) + 1) // 2
