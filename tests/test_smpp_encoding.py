from __future__ import annotations

import itertools
import math
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import OutboundSms
from drivers.smpp.encoding import (
    Concat,
    LinkEncoding,
    PartParams,
    _fits,
    _split,
    concat_from_tlvs,
    decode_inbound,
    decode_short_message,
    part_limit,
    submit_parts,
)
from drivers.smpp.pdu import Command, Pdu, Tag, decode, encode
from drivers.text import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    BodyTooLong,
    encode_gsm7_septets,
    is_gsm7,
    pack_septets,
    split,
)
from gateway.inbound import join_parts

BODY = "CANARY potassium 6.9 mmol/L call ward 7B"  # stands in for patient data
EMOJI = "\U0001f600"
GSM_CHARS = sorted({c for i, c in enumerate(GSM7_BASIC) if i != 0x1B} | set(GSM7_EXTENSION))
GSM_LATIN1_CHARS = [c for c in GSM_CHARS if ord(c) <= 0xFF]
GSM_CODINGS: tuple[Literal[0, 3], ...] = (0, 3)
LONG_MODES: tuple[Literal["udh", "sar", "payload"], ...] = ("udh", "sar", "payload")
REF_BITS: tuple[Literal[8, 16], ...] = (8, 16)
LINKS = [
    LinkEncoding(gsm_coding, long_mode, ref_bits)
    for gsm_coding, long_mode, ref_bits in itertools.product(GSM_CODINGS, LONG_MODES, REF_BITS)
]


def sms_for(body: str, reference: int = 0x12CC) -> OutboundSms:
    """The message as the scheduler builds it."""
    plan = split(body)
    return OutboundSms("m1", "+12025550147", plan.parts, plan.encoding.value, reference=reference)


def udh_of(part: PartParams) -> bytes:
    return part.short_message[: part.short_message[0] + 1] if part.esm_class & 0x40 else b""


def via_pdu(part: PartParams) -> Pdu:
    """The part through our PDU codec, as it would cross the wire."""
    pdu = Pdu(Command.SUBMIT_SM, 1, params=part.params(), tlvs=part.tlvs)
    return decode(encode(pdu))


def decode_part(pdu: Pdu) -> tuple[str, Concat | None]:
    payload = pdu.tlv(Tag.MESSAGE_PAYLOAD, bytes)
    data = payload if payload is not None else pdu.param("short_message", bytes)
    text, concat = decode_short_message(
        data, pdu.param("data_coding", int), pdu.param("esm_class", int)
    )
    return text, concat_from_tlvs(pdu.tlvs) or concat


def _chunks(alphabet: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.lists(st.text(alphabet, min_size=1, max_size=80), max_size=20).map("".join)


gsm_text = _chunks(st.sampled_from(GSM_CHARS))
gsm_latin1_text = _chunks(st.sampled_from(GSM_LATIN1_CHARS))
latin1_text = _chunks(st.characters(max_codepoint=0xFF))
unicode_text = st.one_of(
    _chunks(st.characters(exclude_categories=["Cs"])),
    _chunks(st.sampled_from(["a", "€", "ж", EMOJI, "\U0001d11e", " ", "{"])),
)
any_body = st.one_of(gsm_text, gsm_latin1_text, latin1_text, unicode_text)


# Vectors


def test_udh_8bit_reference_vector() -> None:
    parts = submit_parts(sms_for("a" * 200, reference=0x12CC), LinkEncoding())
    assert [p.short_message[:6].hex() for p in parts] == ["050003cc0201", "050003cc0202"]
    assert [p.esm_class for p in parts] == [0x40, 0x40]
    assert [p.data_coding for p in parts] == [0, 0]
    assert parts[0].short_message[6:] == b"a" * 153
    assert parts[1].short_message[6:] == b"a" * 47
    assert all(p.tlvs == {} for p in parts)


def test_udh_16bit_reference_vector() -> None:
    parts = submit_parts(sms_for("a" * 200, reference=0x1234), LinkEncoding(ref_bits=16))
    assert [p.short_message[:7].hex() for p in parts] == ["06080412340201", "06080412340202"]
    assert len(parts[0].short_message) == 7 + 152


def test_ucs2_vector() -> None:
    (part,) = submit_parts(sms_for("привет"), LinkEncoding())
    assert part.data_coding == 8 and part.esm_class == 0
    assert part.short_message == bytes.fromhex("043f 0440 0438 0432 0435 0442")
    assert decode_short_message(part.short_message, 8, 0) == ("привет", None)


def test_gsm_extension_vector() -> None:
    (part,) = submit_parts(sms_for("€@"), LinkEncoding())
    assert part.short_message == bytes.fromhex("1b65 00")
    assert decode_short_message(bytes.fromhex("1b65 00"), 0, 0) == ("€@", None)


def test_decode_udh_vectors() -> None:
    assert decode_short_message(bytes.fromhex("050003CC0201") + b"Hi", 0, 0x40) == (
        "Hi",
        Concat(0xCC, 2, 1, 8),
    )
    assert decode_short_message(bytes.fromhex("06080412340201") + b"\x1b\x65", 0, 0x40) == (
        "€",
        Concat(0x1234, 2, 1, 16),
    )


@pytest.mark.parametrize(
    ("data_coding", "udh_octets", "octets", "septets"),
    [
        (0, 0, 160, 160), (0, 6, 153, 153), (0, 7, 152, 152),
        (3, 0, 140, 160), (3, 6, 134, 153), (3, 7, 133, 152),
        (8, 0, 140, None), (8, 6, 134, None), (8, 7, 132, None),
    ],
)  # fmt: skip
def test_part_limits(data_coding: int, udh_octets: int, octets: int, septets: int | None) -> None:
    limit = part_limit(data_coding, udh_octets)
    assert (limit.octets, limit.septets) == (octets, septets)


# Choosing data_coding


@pytest.mark.parametrize(
    ("body", "gsm_coding", "data_coding", "octets"),
    [
        ("café", 0, 0, b"caf\x05"),
        ("café", 3, 3, b"caf\xe9"),
        ("[ok]", 3, 3, b"[ok]"),
        ("Δ ok", 3, 8, "Δ ok".encode("utf-16-be")),  # GSM, not Latin-1
        ("5 €", 3, 8, "5 €".encode("utf-16-be")),
        ("naïve", 0, 8, "naïve".encode("utf-16-be")),  # ï is not GSM: UCS-2 on any link
        (EMOJI, 3, 8, bytes.fromhex("d83dde00")),
    ],
)
def test_data_coding_per_link(body: str, gsm_coding: int, data_coding: int, octets: bytes) -> None:
    link = LinkEncoding(gsm_coding=0 if gsm_coding == 0 else 3)
    (part,) = submit_parts(sms_for(body), link)
    assert (part.data_coding, part.short_message) == (data_coding, octets)


def test_gsm_plan_that_is_not_gsm_goes_as_ucs2() -> None:
    sms = OutboundSms("m1", "+12025550147", ("ж",), "gsm7")
    (part,) = submit_parts(sms, LinkEncoding())
    assert (part.data_coding, part.short_message) == (8, "ж".encode("utf-16-be"))


@pytest.mark.parametrize(
    ("body", "link", "count"),
    [
        ("a" * 160, LinkEncoding(), 1),
        ("a" * 161, LinkEncoding(), 2),
        ("€" * 80, LinkEncoding(), 1),
        ("€" * 81, LinkEncoding(), 2),
        ("a" * 140, LinkEncoding(gsm_coding=3), 1),
        ("a" * 141, LinkEncoding(gsm_coding=3), 2),  # split() made one part: re-split
        ("[" * 80, LinkEncoding(gsm_coding=3), 1),
        ("[" * 81, LinkEncoding(gsm_coding=3), 2),  # 162 septets once the SMSC transcodes
        ("a" * 134 * 3, LinkEncoding(gsm_coding=3), 3),
        ("a" * 153 * 3, LinkEncoding(ref_bits=16), 4),
        ("a" * 152 * 3, LinkEncoding(ref_bits=16), 3),
        ("ж" * 70, LinkEncoding(), 1),
        ("ж" * 71, LinkEncoding(), 2),
        ("ж" * 67 * 3, LinkEncoding(ref_bits=16), 4),
        ("ж" * 66 * 3, LinkEncoding(long_mode="sar", ref_bits=16), 3),
        ("a" * 161, LinkEncoding(long_mode="payload"), 1),
    ],
)
def test_part_counts(body: str, link: LinkEncoding, count: int) -> None:
    assert len(submit_parts(sms_for(body), link)) == count


def test_latin1_parts_respect_octets_and_septets() -> None:
    body = "x" * 100 + "{" * 100 + "y" * 200
    parts = submit_parts(sms_for(body), LinkEncoding(gsm_coding=3))
    texts = [p.short_message[6:] for p in parts]
    assert b"".join(texts).decode("latin-1") == body
    assert all(
        len(t) <= 134 and len(encode_gsm7_septets(t.decode("latin-1"))) <= 153 for t in texts
    )
    # Greedy: every part but the last is full by one of the two counts.
    for text, following in itertools.pairwise(texts):
        septets = len(encode_gsm7_septets(text.decode("latin-1") + following[:1].decode("latin-1")))
        assert len(text) == 134 or septets > 153


def test_sar_parts() -> None:
    body = "b" * 300
    parts = submit_parts(sms_for(body, reference=0x1234), LinkEncoding(long_mode="sar"))
    assert [p.tlvs for p in parts] == [
        {Tag.SAR_MSG_REF_NUM: 0x34, Tag.SAR_TOTAL_SEGMENTS: 2, Tag.SAR_SEGMENT_SEQNUM: 1},
        {Tag.SAR_MSG_REF_NUM: 0x34, Tag.SAR_TOTAL_SEGMENTS: 2, Tag.SAR_SEGMENT_SEQNUM: 2},
    ]
    assert [(p.esm_class, p.short_message) for p in parts] == [(0, b"b" * 153), (0, b"b" * 147)]
    wide = submit_parts(sms_for(body, 0x1234), LinkEncoding(long_mode="sar", ref_bits=16))
    assert {p.tlvs[Tag.SAR_MSG_REF_NUM] for p in wide} == {0x1234}
    assert [len(p.short_message) for p in wide] == [152, 148]


def test_payload_mode_sends_the_whole_body_once() -> None:
    body = "ж" * 500
    (part,) = submit_parts(sms_for(body), LinkEncoding(long_mode="payload"))
    assert (part.short_message, part.data_coding, part.esm_class) == (b"", 8, 0)
    assert part.tlvs == {Tag.MESSAGE_PAYLOAD: body.encode("utf-16-be")}
    (short,) = submit_parts(sms_for("short"), LinkEncoding(long_mode="payload"))
    assert (short.short_message, short.tlvs) == (b"short", {})


def test_resend_is_identical_and_reference_is_the_messages() -> None:
    sms = sms_for("c" * 400, reference=0xBEEF)
    first = submit_parts(sms, LinkEncoding())
    assert [p.short_message for p in first] == [
        p.short_message for p in submit_parts(sms, LinkEncoding())
    ]
    assert {udh_of(p)[3] for p in first} == {0xEF}


def test_too_many_parts_at_this_links_size() -> None:
    body = "CANARY " + "d" * (153 * 255 - 7)
    assert len(submit_parts(sms_for(body), LinkEncoding())) == 255
    with pytest.raises(BodyTooLong) as raised:
        submit_parts(sms_for(body), LinkEncoding(ref_bits=16))
    assert raised.value.segments == 257 and "CANARY" not in str(raised.value)


def test_empty_body() -> None:
    (part,) = submit_parts(sms_for(""), LinkEncoding(gsm_coding=3, long_mode="payload"))
    assert (part.short_message, part.tlvs) == (b"", {})


def test_reprs_hold_no_body() -> None:
    (part,) = submit_parts(sms_for(BODY), LinkEncoding())
    decoded = decode_inbound(BODY.encode(), 1, 0)
    assert "CANARY" not in repr(part) and "CANARY" not in repr(decoded)
    assert decoded.text == BODY


def test_link_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="ref_bits"):
        LinkEncoding(ref_bits=12)  # type: ignore[arg-type]  # the point of the test


# Round trips


def air_octets(text_octets: bytes, data_coding: int, udh_octets: int) -> list[int]:
    """User-data octets the part takes on the air, one figure per way the SMSC may send it."""
    fill = (7 - udh_octets * 8 % 7) % 7 if udh_octets else 0
    if data_coding == 0:
        return [udh_octets + len(pack_septets(text_octets, fill))]
    if data_coding == 3:
        septets = encode_gsm7_septets(text_octets.decode("latin-1"))
        return [udh_octets + len(text_octets), udh_octets + len(pack_septets(septets, fill))]
    return [udh_octets + len(text_octets)]


@pytest.mark.parametrize("link", LINKS, ids=repr)
@given(body=any_body, reference=st.integers(0, 0xFFFF), data=st.data())
def test_round_trip(link: LinkEncoding, body: str, reference: int, data: st.DataObject) -> None:
    sms = sms_for(body, reference)
    parts = submit_parts(sms, link)
    pdus = [via_pdu(p) for p in parts]  # our codec refuses a short_message over 254
    decoded = [decode_part(pdu) for pdu in pdus]

    if len(parts) == 1:
        ((text, concat),) = decoded
        assert (text, concat) == (body, None)
        return
    assert link.long_mode != "payload"
    wide = link.ref_bits == 16
    overhead = 7 if wide else 6
    concats = [c for _, c in decoded]
    assert all(c is not None for c in concats)
    assert {(c.reference, c.total) for c in concats if c} == {
        (reference & (0xFFFF if wide else 0xFF), len(parts))
    }
    assert [c.seq for c in concats if c] == list(range(1, len(parts) + 1))
    for part in parts:
        text_octets = part.short_message[len(udh_of(part)) :]
        assert len(udh_of(part)) == (overhead if link.long_mode == "udh" else 0)
        assert max(air_octets(text_octets, part.data_coding, overhead)) <= 140
    planned_coding = 0 if sms.encoding == "gsm7" else 8
    if parts[0].data_coding == planned_coding and not wide:
        assert [text for text, _ in decoded] == list(sms.parts)  # split()'s parts as they are

    order = data.draw(st.permutations(range(len(parts))))
    repeats = data.draw(st.lists(st.sampled_from(range(len(parts))), max_size=3))
    texts: dict[int, str] = {}
    for text, concat in (decoded[i] for i in [*repeats, *order]):
        assert concat is not None
        texts.setdefault(concat.seq, text)  # the gateway keeps the first copy of a part
    assert join_parts(texts, len(parts)) == body


@given(body=unicode_text)
def test_ucs2_parts_never_cut_a_pair(body: str) -> None:
    for link in (LinkEncoding(), LinkEncoding(ref_bits=16)):
        for part in submit_parts(sms_for(body), link):
            text_octets = part.short_message[len(udh_of(part)) :]
            if part.data_coding == 8:
                text_octets.decode("utf-16-be")  # strict: a cut pair raises


@given(body=any_body, udh_octets=st.sampled_from([0, 6, 7]))
def test_one_part_check_agrees_with_the_character_walk(body: str, udh_octets: int) -> None:
    """`_fits` counts in C; it must say what walking the characters says."""
    for data_coding in (0, 3, 8):
        if data_coding != 8 and not is_gsm7(body):
            continue
        limit = part_limit(data_coding, udh_octets)
        assert _fits(body, data_coding, limit) == (len(_split(body, data_coding, limit)) == 1)


@given(body=gsm_text)
def test_a_default_coded_body_is_one_part_exactly_when_its_septets_fit(body: str) -> None:
    """The default coding's one-part check counts the encoded septets: one part, the
    septets themselves, when the walk over the characters makes one part of them."""
    limit = part_limit(0, 0)
    parts = submit_parts(sms_for(body), LinkEncoding(gsm_coding=0))
    one = len(_split(body, 0, limit)) == 1
    assert (len(parts) == 1 and not parts[0].esm_class) == one
    if one:
        assert parts[0] == PartParams(encode_gsm7_septets(body), 0)


def test_extension_characters_count_two_septets_at_the_one_part_limit() -> None:
    """160 septets, five of them escapes, go as one submit_sm; one septet more does not."""
    link = LinkEncoding(gsm_coding=0)
    assert len(submit_parts(sms_for("x" * 150 + "€" * 5), link)) == 1
    assert len(submit_parts(sms_for("x" * 151 + "€" * 5), link)) == 2


@given(st.integers(1, 3000))
def test_re_split_is_minimal(length: int) -> None:
    parts = submit_parts(sms_for("e" * length), LinkEncoding(gsm_coding=3, ref_bits=16))
    assert len(parts) == (1 if length <= 140 else math.ceil(length / 133))


# Inbound decoding


@pytest.mark.parametrize(
    ("data", "data_coding", "esm_class", "text", "charset", "exact"),
    [
        (b"@$_", 1, 0, "@$_", "ascii", True),
        (b"\x00\x02\x11", 0, 0, "@$_", "gsm", True),
        (b"@", 0, 0, "¡", "gsm", True),  # an ASCII '@' under the GSM default alphabet
        (b"caf\xe9", 0, 0, "café", "latin-1", False),  # not septets: a Latin-1 SMSC
        (b"caf\xe9", 3, 0, "café", "latin-1", True),
        (b"caf\xe9", 1, 0, "café", "ascii", False),
        (b"\x04\x3f\x04", 8, 0, "п\ufffd", "ucs2", False),
        (b"\xd8\x3d", 8, 0, "\ufffd", "ucs2", False),
        (b"\x00\xffAB", 4, 0, "00ff4142", "binary", True),
        (b"\x00\xff", 2, 0, "00ff", "binary", True),
        (b"\xe9", 5, 0, "é", "latin-1", False),  # JIS: not supported
        (b"\xe9", 0x99, 0, "é", "latin-1", False),  # reserved DCS group
        (b"\xdf", 6, 0, "п", "iso8859-5", True),
        ("Hi".encode("utf-16-be"), 0x18, 0, "Hi", "ucs2", True),  # DCS: UCS-2, class 0
        (b"\x00", 0xF0, 0, "@", "gsm", True),  # DCS: flash, GSM 7-bit
        (b"\x00", 0xF4, 0, "00", "binary", True),
        # A UDH without UDHI is text; a UDH whose length overruns the octets is no UDH.
        (b"\x05\x00\x03\x01\x02\x01Hi", 3, 0, "\x05\x00\x03\x01\x02\x01Hi", "latin-1", True),
        (b"\x09\x00\x03\x01\x02\x01Hi", 3, 0x40, "\t\x00\x03\x01\x02\x01Hi", "latin-1", True),
        (b"\x00Hi", 0, 0x40, "Hi", "gsm", True),  # empty UDH
        (b"", 0, 0x40, "", "gsm", True),
    ],
)
def test_decode(
    data: bytes, data_coding: int, esm_class: int, text: str, charset: str, exact: bool
) -> None:
    decoded = decode_inbound(data, data_coding, esm_class)
    assert (decoded.text, decoded.charset, decoded.exact) == (text, charset, exact)


def test_link_whose_default_alphabet_is_latin1() -> None:
    decoded = decode_inbound(b"a@b$_", 0, 0, default_alphabet="latin-1")
    assert (decoded.text, decoded.charset, decoded.exact) == ("a@b$_", "latin-1", True)


@pytest.mark.parametrize(
    ("udh", "concat"),
    [
        ("0b 0504 0b8423f0 0003 010302", Concat(1, 3, 2)),  # a port IE before the concat IE
        ("06 0504 0b8423f0", None),  # only a port IE
        ("05 0003 010300", None),  # seq 0: ignored (TS 23.040)
        ("05 0003 010304", None),  # seq beyond total: ignored
        ("0a 0003 010201 0003 020202", Concat(2, 2, 2)),  # the last one counts
        ("07 0003 010201 0004", Concat(1, 2, 1)),  # a cut IE after a good one
        ("06 0004 01020100", None),  # concat IE of the wrong length
    ],
)
def test_udh_information_elements(udh: str, concat: Concat | None) -> None:
    assert decode_short_message(bytes.fromhex(udh.replace(" ", "")) + b"Hi", 0, 0x40) == (
        "Hi",
        concat,
    )


@pytest.mark.parametrize(
    ("tlvs", "concat"),
    [
        ({0x020C: 0x1234, 0x020E: 3, 0x020F: 2}, Concat(0x1234, 3, 2, 16)),
        ({0x020C: 0x1234, 0x020E: 3}, None),
        ({0x020C: 1, 0x020E: 3, 0x020F: 4}, None),
        ({0x020C: 1, 0x020E: 3, 0x020F: 0}, None),
        ({0x020C: b"\x00\x01", 0x020E: 3, 0x020F: 1}, None),
        ({}, None),
    ],
)
def test_concat_from_tlvs(tlvs: dict[int, int | bytes], concat: Concat | None) -> None:
    assert concat_from_tlvs(tlvs) == concat


@pytest.mark.parametrize(
    ("reference", "total", "seq", "ref_bits"),
    [(256, 2, 1, 8), (-1, 2, 1, 8), (1, 2, 3, 8), (1, 2, 0, 8), (1, 256, 1, 16), (1, 2, 1, 7)],
)
def test_concat_is_checked(reference: int, total: int, seq: int, ref_bits: int) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # which check does not matter
        Concat(reference, total, seq, ref_bits)


@given(
    data=st.binary(max_size=300),
    data_coding=st.one_of(st.integers(0, 255), st.integers(-(2**40), 2**40)),
    esm_class=st.one_of(st.integers(0, 255), st.sampled_from([0x40, 0x43])),
    default_alphabet=st.sampled_from(["gsm", "latin-1"]),
)
def test_decode_never_raises(
    data: bytes, data_coding: int, esm_class: int, default_alphabet: str
) -> None:
    decoded = decode_inbound(
        data,
        data_coding,
        esm_class,
        default_alphabet="gsm" if default_alphabet == "gsm" else "latin-1",
    )
    assert isinstance(decoded.text, str)
    udh = bytes((5, 0, 3)) + data[:3]
    assert isinstance(decode_short_message(udh + data, data_coding, 0x40)[0], str)
