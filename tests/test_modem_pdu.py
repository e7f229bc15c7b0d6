"""SMS PDU codec: published vectors, hand-assembled vectors, round trips, fuzzing, and a
cross-check against python-gsmmodem-new's independent codec (`gsmmodem.pdu`)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

import gsmmodem.pdu as oracle
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from drivers.modem.pdu import (
    Concat,
    PduError,
    SmsDeliver,
    StatusReport,
    decode_incoming,
    decode_submit,
    encode_deliver,
    encode_status_report,
    encode_submit,
    iter_submit_parts,
    validity_code,
    validity_minutes_of,
)
from drivers.text import GSM7_BASIC, GSM7_EXTENSION, septet_length, split

BODY = "CANARY potassium 6.9 mmol/L call ward 7B"  # stands in for patient data
GSM_CHARS = sorted({c for i, c in enumerate(GSM7_BASIC) if i != 0x1B} | set(GSM7_EXTENSION))

# ------------------------------------------------------------------ published vectors

# "SMS messages and the PDU format" (Lars Pettersson, dreamfabric.com, mirrored on
# turbocontrol.com and subnets.ru): SMS-SUBMIT of "hellohello" to +46708251358, TP-VP
# 0xAA (4 days), SMSC "00" (the phone's), TP-MR 0 (the phone picks).
HELLOHELLO_SUBMIT = "0011000B916407281553F80000AA0AE8329BFD4697D9EC37"
# Same tutorial: SMS-DELIVER from 27838890001 (type of address 0xC8) via SMSC
# +27381000015, stamped 99-03-29 15:16:59 at GMT+2.
HELLOHELLO_DELIVER = "07917283010010F5040BC87238880900F10000993092516195800AE8329BFD4697D9EC37"


def test_hellohello_submit_encodes_byte_for_byte() -> None:
    encoded = encode_submit(
        to="+46708251358", text="hellohello", encoding="gsm7", validity_minutes=4 * 24 * 60
    )
    assert encoded.hex == HELLOHELLO_SUBMIT
    assert encoded.tpdu_length == 23  # the <length> AT+CMGS wants: all but the "00"


def test_hellohello_submit_decodes() -> None:
    sms = decode_submit(HELLOHELLO_SUBMIT)
    assert (sms.to, sms.text, sms.encoding) == ("+46708251358", "hellohello", "gsm7")
    assert (sms.message_ref, sms.validity_minutes, sms.request_report) == (0, 5760, False)
    assert sms.concat is None


def test_hellohello_deliver_decodes() -> None:
    sms = decode_incoming(HELLOHELLO_DELIVER)
    assert isinstance(sms, SmsDeliver)
    assert sms.smsc == "+27381000015"
    assert (sms.sender, sms.sender_kind) == ("27838890001", "other")  # TON 4: subscriber
    assert sms.text == "hellohello"
    assert sms.timestamp == datetime(1999, 3, 29, 15, 16, 59, tzinfo=timezone(timedelta(hours=2)))


def test_pdu_given_without_smsc_field() -> None:
    sms = decode_incoming(HELLOHELLO_DELIVER[16:], has_smsc=False)
    assert isinstance(sms, SmsDeliver) and sms.smsc is None and sms.text == "hellohello"


# ------------------------------------------------- vectors assembled from TS 23.040 by hand

# SMS-DELIVER, UCS-2 "Hi" + U+1F600 (a surrogate pair D83D DE00), from alphanumeric "ABC":
# OA 06 (six semi-octets) D0 (TON 5) 41E110 (A,B,C packed), SCTS 2024-02-29 23:59:58 at
# UTC-03:30 (14 quarters, sign bit 0x08 in the first digit: 0x49).
UCS2_ALPHA_DELIVER = "000406D041E110000842209232958549" + "08" + "00480069D83DDE00"
# SMS-SUBMIT with TP-SRR and TP-UDHI (0x61), TP-MR 0x2A, national-format number of type
# unknown 0A 81 7080523185 (the tutorial's 0708251358), a 16-bit concatenation header
# 06 08 04 1234 03 02 (seven octets, exactly eight septets: no fill bits), "hello".
WIDE_CONCAT_SUBMIT = "00612A0A8170805231850000" + "0D" + "06080412340302" + "E8329BFD06"
# SMS-DELIVER part 1 of 2 with an 8-bit header 05 00 03 CC 02 01 (six octets, so one fill
# bit before the septets): "hello" shifted by one bit is D06536FB0D; UDL 7 + 5.
CONCAT_DELIVER = "00440B916407281553F8000032211321000040" + "0C" + "050003CC0201" + "D06536FB0D"
# SMS-STATUS-REPORT (0x06: MTI 10, no more messages) for TP-MR 0x2A, discharged a minute
# after submission, TP-ST 0x00 (received by the recipient).
STATUS_REPORT = "00062A0B916407281553F8" + "32211321000040" + "32211321100040" + "00"
CET = timezone(timedelta(hours=1))


def test_ucs2_deliver_from_alphanumeric_sender() -> None:
    sms = decode_incoming(UCS2_ALPHA_DELIVER)
    assert isinstance(sms, SmsDeliver)
    assert (sms.sender, sms.sender_kind, sms.encoding) == ("ABC", "alphanumeric", "ucs2")
    assert sms.text == "Hi\U0001f600"
    assert sms.timestamp == datetime(
        2024, 2, 29, 23, 59, 58, tzinfo=timezone(-timedelta(hours=3, minutes=30))
    )
    again = encode_deliver(
        sender="ABC", text=sms.text, encoding="ucs2", timestamp=sms.timestamp, smsc=None
    )
    assert again.hex == UCS2_ALPHA_DELIVER


def test_wide_concat_submit_without_fill_bits() -> None:
    encoded = encode_submit(
        to="0708251358",
        text="hello",
        encoding="gsm7",
        message_ref=0x2A,
        concat=Concat(0x1234, 3, 2, wide_ref=True),
        request_report=True,
    )
    assert encoded.hex == WIDE_CONCAT_SUBMIT
    sms = decode_submit(WIDE_CONCAT_SUBMIT)
    assert sms.concat == Concat(0x1234, 3, 2, wide_ref=True)
    assert (sms.to, sms.text, sms.request_report, sms.message_ref) == (
        "0708251358",
        "hello",
        True,
        42,
    )


def test_concat_deliver_with_one_fill_bit() -> None:
    sms = decode_incoming(CONCAT_DELIVER)
    assert isinstance(sms, SmsDeliver)
    assert (sms.sender, sms.sender_kind, sms.text) == ("+46708251358", "international", "hello")
    assert sms.concat == Concat(0xCC, 2, 1)
    assert sms.timestamp == datetime(2023, 12, 31, 12, 0, 0, tzinfo=CET)
    again = encode_deliver(
        sender=sms.sender, text="hello", encoding="gsm7", timestamp=sms.timestamp, concat=sms.concat
    )
    assert again.hex == CONCAT_DELIVER


def test_status_report_vector() -> None:
    report = decode_incoming(STATUS_REPORT)
    assert report == StatusReport(
        message_ref=0x2A,
        recipient="+46708251358",
        submitted=datetime(2023, 12, 31, 12, 0, 0, tzinfo=CET),
        discharged=datetime(2023, 12, 31, 12, 1, 0, tzinfo=CET),
        status=0,
    )
    assert report.outcome == "delivered"
    again = encode_status_report(
        message_ref=0x2A,
        recipient="+46708251358",
        status=0,
        submitted=report.submitted,
        discharged=report.discharged,
    )
    assert again.hex == STATUS_REPORT


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        *[(0x00, "delivered"), (0x1F, "delivered"), (0x20, "pending"), (0x3F, "pending")],
        *[(0x40, "failed"), (0x45, "failed"), (0x60, "failed"), (0x7F, "failed")],
    ],
)
def test_status_classes(status: int, outcome: str) -> None:
    report = decode_incoming(STATUS_REPORT[:-2] + f"{status:02X}")
    assert isinstance(report, StatusReport) and report.outcome == outcome


def test_status_report_with_optional_parameters_after_the_status() -> None:
    # TP-PI 0x03 says TP-PID and TP-DCS follow; they carry nothing the gateway uses.
    report = decode_incoming(STATUS_REPORT + "030000")
    assert isinstance(report, StatusReport) and report.status == 0


def test_extension_table_in_text() -> None:
    text = "{[€]}|^~\\\x0c"
    encoded = encode_submit(to="+1", text=text, encoding="gsm7")
    sms = decode_submit(encoded.hex)
    assert sms.text == text
    # Every extension character costs an escape and its code: 20 septets.
    assert int(encoded.hex[16:18], 16) == septet_length(text) == 20


def test_unknown_header_elements_are_skipped() -> None:
    # Header: 0E (14 octets) = IE 0x24 (national language, 1 octet) + IE 0x05 (ports,
    # 4 octets) + IE 0x00 (concat 8-bit, ref 7, part 2 of 3).
    header = "0E" + "240101" + "050423F40000" + "0003070302"
    head = "0044" + "0B916407281553F8" + "00"
    stamp = "32211321000040"
    # UCS-2: UDL 15 + 4 octets.
    sms = decode_incoming(head + "08" + stamp + "13" + header + "00680069")
    assert isinstance(sms, SmsDeliver) and sms.text == "hi" and sms.concat == Concat(7, 3, 2)
    # GSM 7-bit: 15 header octets = 120 bits, padded with 6 fill bits to 18 septets; "hi"
    # after six zero bits is 00 3A 0D; UDL 18 + 2 septets.
    sms = decode_incoming(head + "00" + stamp + "14" + header + "003A0D")
    assert isinstance(sms, SmsDeliver) and sms.text == "hi" and sms.concat == Concat(7, 3, 2)


def test_self_contradicting_concat_element_is_ignored() -> None:
    # seq 3 of total 2: TS 23.040 9.2.3.24.1 says to ignore the element.
    bad = CONCAT_DELIVER.replace("050003CC0201", "050003CC0203")
    sms = decode_incoming(bad)
    assert isinstance(sms, SmsDeliver) and sms.concat is None and sms.text == "hello"


def test_8bit_deliver_keeps_raw_data() -> None:
    stamp = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)
    payload = bytes(range(0, 256, 7))
    encoded = encode_deliver(
        sender="+4912345", text="", encoding="8bit", timestamp=stamp, data=payload
    )
    sms = decode_incoming(encoded.hex)
    assert isinstance(sms, SmsDeliver)
    assert (sms.encoding, sms.data, sms.text) == ("8bit", payload, "")


@pytest.mark.parametrize(
    ("dcs", "encoding"),
    [
        *[(0x00, "gsm7"), (0x04, "8bit"), (0x08, "ucs2"), (0x0C, "gsm7"), (0x10, "gsm7")],
        *[(0x18, "ucs2"), (0x24, "8bit"), (0x48, "ucs2"), (0xC0, "gsm7"), (0xE0, "ucs2")],
        *[(0xF0, "gsm7"), (0xF4, "8bit"), (0x90, "gsm7")],
    ],
)
def test_data_coding_groups(dcs: int, encoding: str) -> None:
    data = {"gsm7": "02" + "E834", "ucs2": "02" + "0068", "8bit": "02" + "6869"}[encoding]
    pdu = "0004" + "0B916407281553F8" + "00" + f"{dcs:02X}" + "32211321000040" + data
    sms = decode_incoming(pdu)
    assert isinstance(sms, SmsDeliver) and sms.encoding == encoding


# ------------------------------------------------------------------ length checks


@pytest.mark.parametrize(
    "pdu",
    [
        "",
        "zz",
        "00",  # SMSC field only
        HELLOHELLO_DELIVER[:-2],  # user data one octet short
        "0C" + HELLOHELLO_DELIVER[2:],  # SMSC length past the limit
        "00" + "04" + "15" + HELLOHELLO_DELIVER[22:],  # 21-digit address
        "0004" + "0B916407281553F8" + "0000" + "32211321000040" + "A1" + "00" * 141,  # UDL 161
        "0004" + "0B916407281553F8" + "0008" + "32211321000040" + "8D" + "00" * 141,  # UDL 141
        "0044" + "0B916407281553F8" + "0008" + "32211321000040" + "04" + "05000301",  # UDHL > UDL
        "0044" + "0B916407281553F8" + "0000" + "32211321000040" + "05" + "0A00030201",  # in septets
        "0044" + "0B916407281553F8" + "0008" + "32211321000040" + "04" + "030003AA",  # IE > header
        "0004" + "0B916407281553F8" + "0000" + "322113210000A0" + "00",  # zone not decimal
        "0004" + "0B916407281553F8" + "0000" + "32213321000040" + "00",  # 33rd December
        "0001",  # an SMS-SUBMIT is not incoming
        "0003",  # reserved message type
        STATUS_REPORT[:-2],  # no status octet
    ],
)
def test_bad_incoming_pdus_raise_pdu_error(pdu: str) -> None:
    with pytest.raises(PduError):
        decode_incoming(pdu)


def test_decode_submit_rejects_a_deliver() -> None:
    with pytest.raises(PduError):
        decode_submit(HELLOHELLO_DELIVER)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"text": "x" * 161},
        {"text": "{" * 81},  # 162 septets
        {"text": "x" * 154, "concat": Concat(1, 2, 1)},  # 7 header septets + 154
        {"text": "é" * 71, "encoding": "ucs2"},
        {"text": "\U0001f600" * 34, "encoding": "ucs2", "concat": Concat(1, 2, 1)},
        {"text": "\u0416"},  # not GSM 7-bit
        {"to": ""},
        {"to": "+1" + "2" * 20},
        {"to": "12-34"},
        {"message_ref": 256},
        {"concat": Concat(256, 2, 1)},
        {"concat": Concat(1, 2, 3)},
        {"concat": Concat(1, 0, 0)},
        {"concat": Concat(70000, 2, 1, wide_ref=True)},
        {"validity_minutes": 0},
        {"encoding": "8bit"},
    ],
)
def test_encode_submit_rejects_with_pdu_error(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {"to": "+12025550147", "text": "hi", "encoding": "gsm7"}
    with pytest.raises(PduError) as caught:
        encode_submit(**(arguments | kwargs))  # type: ignore[arg-type]
    assert "12025550147" not in str(caught.value) and "x" * 10 not in str(caught.value)


@pytest.mark.parametrize(
    "stamp",
    [
        datetime(2024, 1, 1),  # naive
        datetime(2024, 1, 1, tzinfo=timezone(timedelta(minutes=10))),
        datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=20))),
        datetime(2090, 1, 1, tzinfo=UTC),
    ],
)
def test_encode_deliver_rejects_unencodable_timestamps(stamp: datetime) -> None:
    with pytest.raises(PduError):
        encode_deliver(sender="+1", text="x", encoding="gsm7", timestamp=stamp)


def test_encode_deliver_rejects_long_alphanumeric_sender() -> None:
    stamp = datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(PduError):
        encode_deliver(sender="ABCDEFGHIJKL", text="x", encoding="gsm7", timestamp=stamp)


def test_validity_table_edges() -> None:
    # TS 23.040 9.2.3.12.1: 5-minute steps to 12 h, 30-minute steps to 24 h, days to 30,
    # weeks to 63.
    assert [validity_minutes_of(c) for c in (0, 143, 144, 167, 168, 196, 197, 255)] == [
        5,
        720,
        750,
        1440,
        2 * 1440,
        30 * 1440,
        5 * 7 * 1440,
        63 * 7 * 1440,
    ]
    assert validity_code(1) == 0 and validity_code(10**9) == 255


@given(st.integers(1, 63 * 7 * 1440))
def test_validity_code_is_the_smallest_that_covers(minutes: int) -> None:
    code = validity_code(minutes)
    assert validity_minutes_of(code) >= minutes
    assert code == 0 or validity_minutes_of(code - 1) < minutes


# ------------------------------------------------------------------ round trips

gsm_texts = st.text(alphabet=GSM_CHARS, max_size=70)
ucs2_texts = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], max_codepoint=0x10FFFF), max_size=30
)
numbers = st.from_regex(r"\+?[0-9*#]{1,20}", fullmatch=True)
concats = st.none() | st.builds(
    lambda wide, ref, total, seq: Concat(
        ref % (65536 if wide else 256), total, min(seq, total), wide
    ),
    st.booleans(),
    st.integers(0, 65535),
    st.integers(1, 255),
    st.integers(1, 255),
)
stamps = st.builds(
    lambda moment, quarters: moment.replace(tzinfo=timezone(timedelta(minutes=15 * quarters))),
    st.datetimes(datetime(1990, 1, 1), datetime(2089, 12, 31, 23, 59, 59)).map(
        lambda d: d.replace(microsecond=0)
    ),
    st.integers(-79, 79),
)
alphanumeric = st.text(alphabet=GSM_CHARS, min_size=1, max_size=11).filter(
    lambda s: septet_length(s) <= 11 and not s.lstrip("+").isdigit()
)
senders = st.from_regex(r"\+?[0-9]{1,20}", fullmatch=True) | alphanumeric


@st.composite
def text_and_encoding(draw: st.DrawFn) -> tuple[str, Literal["gsm7", "ucs2"]]:
    if draw(st.booleans()):
        return draw(gsm_texts), "gsm7"
    return draw(ucs2_texts), "ucs2"


@given(
    text_and_encoding(),
    numbers,
    st.integers(0, 255),
    concats,
    st.booleans(),
    st.none() | st.integers(1, 63 * 7 * 1440),
)
def test_submit_round_trip(
    text_encoding: tuple[str, Literal["gsm7", "ucs2"]],
    to: str,
    ref: int,
    concat: Concat | None,
    report: bool,
    validity: int | None,
) -> None:
    text, encoding = text_encoding
    encoded = encode_submit(
        to=to,
        text=text,
        encoding=encoding,
        message_ref=ref,
        concat=concat,
        request_report=report,
        validity_minutes=validity,
    )
    assert encoded.tpdu_length == len(encoded.hex) // 2 - 1
    sms = decode_submit(encoded.hex)
    assert (sms.to, sms.text, sms.encoding, sms.message_ref) == (to, text, encoding, ref)
    assert (sms.concat, sms.request_report) == (concat, report)
    expected_validity = None if validity is None else validity_minutes_of(validity_code(validity))
    assert sms.validity_minutes == expected_validity
    assert decode_submit(bytes.fromhex(encoded.hex)) == sms


@given(
    text_and_encoding(),
    senders,
    stamps,
    concats,
    st.none() | numbers.filter(lambda n: len(n.lstrip("+")) <= 20),
)
def test_deliver_round_trip(
    text_encoding: tuple[str, Literal["gsm7", "ucs2"]],
    sender: str,
    stamp: datetime,
    concat: Concat | None,
    smsc: str | None,
) -> None:
    text, encoding = text_encoding
    encoded = encode_deliver(
        sender=sender, text=text, encoding=encoding, timestamp=stamp, concat=concat, smsc=smsc
    )
    sms = decode_incoming(encoded.hex)
    assert isinstance(sms, SmsDeliver)
    assert (sms.sender, sms.text, sms.encoding, sms.concat) == (sender, text, encoding, concat)
    assert sms.timestamp == stamp and sms.timestamp.utcoffset() == stamp.utcoffset()
    assert sms.smsc == (smsc or None)
    kind = "international" if sender.startswith("+") else "national"
    assert sms.sender_kind == (kind if sender.lstrip("+").isdigit() else "alphanumeric")


@given(st.binary(max_size=134), concats)
def test_8bit_deliver_round_trip(data: bytes, concat: Concat | None) -> None:
    stamp = datetime(2030, 6, 1, 8, 0, tzinfo=UTC)
    encoded = encode_deliver(
        sender="+1", text="", encoding="8bit", timestamp=stamp, concat=concat, data=data
    )
    sms = decode_incoming(encoded.hex)
    assert isinstance(sms, SmsDeliver) and (sms.data, sms.concat) == (data, concat)


@given(st.integers(0, 255), numbers, st.integers(0, 255), stamps, stamps)
def test_status_report_round_trip(
    ref: int, recipient: str, status: int, submitted: datetime, discharged: datetime
) -> None:
    encoded = encode_status_report(
        message_ref=ref,
        recipient=recipient,
        status=status,
        submitted=submitted,
        discharged=discharged,
        smsc="+4915",
    )
    report = decode_incoming(encoded.hex)
    assert report == StatusReport(ref, recipient, submitted, discharged, status)


@given(st.text(alphabet=GSM_CHARS, max_size=600) | ucs2_texts.map(lambda t: t * 5))
def test_split_body_parts_reassemble(body: str) -> None:
    plan = split(body)
    encoding: Literal["gsm7", "ucs2"] = "gsm7" if plan.encoding.value == "gsm7" else "ucs2"
    pdus = list(
        iter_submit_parts(
            to="+1", parts=plan.parts, encoding=encoding, first_message_ref=250, concat_ref=9
        )
    )
    decoded = [decode_submit(p.hex) for p in pdus]
    assert "".join(d.text for d in decoded) == body
    assert [d.message_ref for d in decoded] == [(250 + i) % 256 for i in range(len(pdus))]
    if len(pdus) > 1:
        assert [d.concat for d in decoded] == [
            Concat(9, len(pdus), i + 1) for i in range(len(pdus))
        ]
    else:
        assert decoded[0].concat is None


# ------------------------------------------------------------------ fuzzing


@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_octets_raise_only_pdu_error(data: bytes, has_smsc: bool) -> None:
    for decode in (decode_incoming, decode_submit):
        with contextlib.suppress(PduError):
            decode(data, has_smsc=has_smsc)


@st.composite
def mutated_pdus(draw: st.DrawFn) -> bytes:
    """Valid PDUs with an octet changed, octets cut off or added: deeper than random."""
    stamp = draw(stamps)
    text, encoding = draw(text_and_encoding())
    choice = draw(st.sampled_from(["deliver", "submit", "report"]))
    if choice == "deliver":
        hex_pdu = encode_deliver(
            sender=draw(senders),
            text=text,
            encoding=encoding,
            timestamp=stamp,
            concat=draw(concats),
        ).hex
    elif choice == "submit":
        hex_pdu = encode_submit(to="+49151", text=text, encoding=encoding, concat=draw(concats)).hex
    else:
        hex_pdu = encode_status_report(
            message_ref=1, recipient="+1", status=0, submitted=stamp, discharged=stamp
        ).hex
    octets = bytearray.fromhex(hex_pdu)
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(octets) - 1))
        octets[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(octets)))
    return bytes(octets[:cut]) + draw(st.binary(max_size=4))


@given(mutated_pdus())
def test_mutated_pdus_raise_only_pdu_error(data: bytes) -> None:
    for decode in (decode_incoming, decode_submit):
        with contextlib.suppress(PduError):
            decode(data)
        with contextlib.suppress(PduError):
            decode(data.hex())


# ------------------------------------------------------------------ oracle: gsmmodem.pdu

# gsmmodem.pdu's basic table has "`" where TS 23.038 has "§" (0x5F) and it maps form
# feed to U+00FF (which its encoder then fails on), so texts for it leave those out. Its
# septet unpacker also drops a final "@" (septet 0) in some bit alignments, so its GSM
# 7-bit texts do not end in "@".
ORACLE_GSM_CHARS = [c for c in GSM_CHARS if c not in "§\x0c"]
oracle_gsm_texts = st.text(alphabet=ORACLE_GSM_CHARS, max_size=70).filter(
    lambda t: not t.endswith("@")
)


def oracle_gsm7(char: str) -> bool:
    return char in oracle.GSM7_BASIC or char in oracle.GSM7_EXTENDED


# Its UCS-2 encoder writes one code unit per character: BMP only, surrogates excluded.
oracle_ucs2_texts = st.text(
    alphabet=st.characters(
        blacklist_categories=["Cs"], blacklist_characters="\xff", max_codepoint=0xFFFF
    ),
    max_size=60,
).filter(lambda t: not all(oracle_gsm7(c) for c in t))
# It reads two-digit years as strptime's %y does (69-99 are 19xx).
oracle_stamps = stamps.filter(lambda moment: 2000 <= moment.year <= 2068)
intl_numbers = st.from_regex(r"\+[1-9][0-9]{3,14}", fullmatch=True)


def oracle_concat(decoded: dict[str, object]) -> Concat | None:
    elements = decoded.get("udh", [])
    assert isinstance(elements, list)
    for element in elements:
        if isinstance(element, oracle.Concatenation):
            return Concat(element.reference, element.parts, element.number, element.id == 0x08)
    return None


def utf16_units(text: str) -> str:
    """How gsmmodem.pdu decodes UCS-2: one character per code unit."""
    data = text.encode("utf-16-be", errors="surrogatepass")
    return "".join(chr(int.from_bytes(data[i : i + 2], "big")) for i in range(0, len(data), 2))


@st.composite
def oracle_concats(draw: st.DrawFn, encoding: str) -> Concat | None:
    concat = draw(concats)
    # gsmmodem.pdu skips one octet too many after a GSM 7-bit UDH that ends on a septet
    # boundary (the 16-bit reference's seven octets), so its GSM 7-bit checks use 8-bit refs.
    if concat is not None and encoding == "gsm7" and concat.wide_ref:
        return Concat(concat.ref % 256, concat.total, concat.seq)
    return concat


@given(st.data(), intl_numbers | st.from_regex(r"[0-9]{1,20}", fullmatch=True), st.booleans())
def test_oracle_reads_our_submits(data: st.DataObject, to: str, gsm: bool) -> None:
    text = data.draw(oracle_gsm_texts if gsm else ucs2_texts)
    encoding: Literal["gsm7", "ucs2"] = "gsm7" if gsm else "ucs2"
    concat = data.draw(oracle_concats(encoding))
    ref = data.draw(st.integers(0, 255))
    encoded = encode_submit(
        to=to, text=text, encoding=encoding, message_ref=ref, concat=concat, request_report=True
    )
    theirs = oracle.decodeSmsPdu(encoded.hex)
    assert theirs["type"] == "SMS-SUBMIT"
    assert (theirs["number"], theirs["reference"]) == (to, ref)
    assert theirs["text"] == (text if gsm else utf16_units(text))
    assert oracle_concat(theirs) == concat
    assert theirs["tpdu_length"] == encoded.tpdu_length


@given(st.data(), intl_numbers, st.booleans(), oracle_stamps)
def test_oracle_reads_our_delivers(
    data: st.DataObject, sender: str, gsm: bool, stamp: datetime
) -> None:
    text = data.draw(oracle_gsm_texts if gsm else ucs2_texts)
    encoding: Literal["gsm7", "ucs2"] = "gsm7" if gsm else "ucs2"
    concat = data.draw(oracle_concats(encoding))
    alpha = data.draw(
        st.none() | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ abc", min_size=1, max_size=11)
    )
    sender = alpha if alpha and not alpha.isdigit() else sender
    encoded = encode_deliver(
        sender=sender, text=text, encoding=encoding, timestamp=stamp, concat=concat, smsc="+4917"
    )
    theirs = oracle.decodeSmsPdu(encoded.hex)
    assert theirs["type"] == "SMS-DELIVER"
    assert (theirs["number"], theirs["smsc"]) == (sender, "+4917")
    assert theirs["text"] == (text if gsm else utf16_units(text))
    assert oracle_concat(theirs) == concat
    assert theirs["time"] == stamp


@given(st.integers(0, 255), intl_numbers, st.integers(0, 255), oracle_stamps, oracle_stamps)
def test_oracle_reads_our_status_reports(
    ref: int, recipient: str, status: int, submitted: datetime, discharged: datetime
) -> None:
    encoded = encode_status_report(
        message_ref=ref,
        recipient=recipient,
        status=status,
        submitted=submitted,
        discharged=discharged,
    )
    theirs = oracle.decodeSmsPdu(encoded.hex)
    assert theirs["type"] == "SMS-STATUS-REPORT"
    assert (theirs["reference"], theirs["number"], theirs["status"]) == (ref, recipient, status)
    assert (theirs["time"], theirs["discharge"]) == (submitted, discharged)


@given(
    intl_numbers | st.from_regex(r"[0-9]{1,15}", fullmatch=True),
    st.text(alphabet=ORACLE_GSM_CHARS, max_size=400) | oracle_ucs2_texts.map(lambda t: t * 3),
    st.integers(0, 255),
    st.none() | st.integers(5, 63 * 7 * 1440),
)
def test_we_read_the_oracles_submits(to: str, text: str, ref: int, validity: int | None) -> None:
    assume(text)
    period = None if validity is None else timedelta(minutes=validity)
    theirs = oracle.encodeSmsSubmitPdu(to, text, reference=ref, validity=period)
    decoded = [decode_submit(str(pdu)) for pdu in theirs]
    assert "".join(d.text for d in decoded) == text
    for seq, (pdu, sms) in enumerate(zip(theirs, decoded, strict=True), start=1):
        assert (sms.to, sms.message_ref, sms.request_report) == (to, ref, True)
        assert sms.encoding == ("gsm7" if all(oracle_gsm7(c) for c in text) else "ucs2")
        expected = Concat(ref, len(theirs), seq) if len(theirs) > 1 else None
        assert sms.concat == expected
        assert pdu.tpduLength == len(pdu.data) - 1
        if period is not None:
            assert sms.validity_minutes == validity_minutes_of(
                oracle._encodeRelativeValidityPeriod(period)
            )
