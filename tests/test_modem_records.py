"""Records as real phones and modems store them: published AT+CMGR answers from gammu's
test dumps (https://github.com/gammu/gammu, tests/at-sms/ and tests/at-sms-failing/,
collected by gammu's authors from AT+CMGR output people posted), decoded by TP-UDL with
whatever the record carries after it ignored, and the storage listings read safely."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modem import commands as cmd
from drivers.modem.pdu import (
    MTI_DELIVER,
    MTI_STATUS_REPORT,
    MTI_SUBMIT,
    Concat,
    PduError,
    SmsDeliver,
    StatusReport,
    decode_incoming,
    encode_deliver,
    message_type,
)

# gammu tests/at-sms/39.dump ("Fix another case of SMS parsing (bug #1654)", 2012):
# `+CMGR: ,,92` whose SMS-DELIVER declares TP-UDL 0x35 (53 septets, 47 octets) and
# carries 30 more octets after them.
PAST_UDL = (
    "07914336120011F10404A14949000021807001253040356C76B81D268741F0B29C9C268741E4B20EB4"
    "9AD16CB19BAD368BD96EA0B71B04BBBD603810284C078162315D2CE70289EBFAE1AC0CB2BFF52C10FC"
    "2D0799C3F6B71CC46687DB6550980D8AC962"
)
# gammu tests/at-sms/03.dump: a plain 7-bit SMS-DELIVER, "Ok sir".
PLAIN_GSM7 = "0791198948004544040C9119894882006200007050307040042206CF35689E9603"
# gammu tests/at-sms/22.dump: part 1 of 2 (UDH IE 0x00), 7-bit, 160 septets with header.
CONCAT_GSM7 = (
    "0791246020099990400C91247042972767000070107031107440A005000301020182E8B71A040FDBD9"
    "6516881E5E83DA65907D5C968741EEF49AFC06B9CBEFB53C4C66B34061771AE42EEBDDE1799AED4EB3"
    "4161D0BA0E7F93D3F63A483D2FB74161771AE42ED7E7EE3A3BCC0285C720FABB5D07B5DF6390BB3C1F"
    "A3C3FA32FBAD4BB940D43219342F83C6E8FC9C1E6E83E0F2F0F86D0FD3416150FBAD77874169903B0C"
    "A2BF41"
)
# gammu tests/at-sms/40.dump: an 8-bit WAP push with a UDH (port addressing IE 0x05).
WAP_8BIT = (
    "07912374151616F6440B911174164210F000F571309290346280860605040B8423F04F06226170706C"
    "69636174696F6E2F766E642E7761702E6D6D732D6D65737361676500AF848C82983831343630343934"
    "406D6D7331008D928918802B33333333333439333231312F545950453D504C4D4E0096008F8186818A"
    "808E03017A598805810303F48083687474703A2F2F6D74732F3F69643D383134363034393400"
)
# gammu tests/at-sms/32.dump: a status report (`+CMGR: 3,,29`) whose record is padded
# with FF to the end of the SIM's 176-octet EF-SMS record.
STATUS_FF = "079124602009999002AB098106845688F8907080517375809070805183018000" + "FF" * 143
# gammu tests/at-sms/02.dump: an SMS-SUBMIT saved on the phone (`+CMGR: 3,,29`).
STORED_SUBMIT = "0791361907001003B17A0C913619397750320000AD11CD701E340FB3C3F23CC81D0689C3BF"
# gammu tests/at-sms-failing/33.dump: `+CMGR: 2,2,,174`, an emptied record of FF.
ALL_FF = "00" + "FF" * 174
# gammu tests/at-sms-failing/35.dump: a UCS-2 SMS-DELIVER cut short (TP-UDL 0x35, 52
# octets follow): it cannot be decoded, and must be kept for an operator.
TRUNCATED_UCS2 = (
    "07916307996905F0040B916307779872F4003901406041433180353058AC6CCBCD64B05BB80C200076"
    "000000000020006F0074007400000000006F00630000006900760061006C002000"
)
SIM_RECORD_OCTETS = 176  # EF-SMS (TS 51.011 10.5.3): a status octet and 175 of PDU


def ff_padded(pdu: str) -> str:
    """`pdu` padded with FF as a phone that dumps the whole SIM record gives it."""
    return pdu + "FF" * (SIM_RECORD_OCTETS - 1 - len(pdu) // 2)


def test_octets_past_the_declared_length_are_ignored() -> None:
    sms = decode_incoming(PAST_UDL)
    assert isinstance(sms, SmsDeliver)
    assert sms.text == "llamada perdida de: +34617653167 on 07/08  at  11:19."
    assert (sms.sender, sms.sender_kind) == ("9494", "national")


@pytest.mark.parametrize("pdu", [PLAIN_GSM7, CONCAT_GSM7, WAP_8BIT])
def test_ff_padded_records_decode_as_the_bare_pdu(pdu: str) -> None:
    assert decode_incoming(ff_padded(pdu)) == decode_incoming(pdu)
    assert decode_incoming(pdu + "00" * 7) == decode_incoming(pdu)


def test_published_padded_records_keep_their_fields() -> None:
    concat = decode_incoming(ff_padded(CONCAT_GSM7))
    assert isinstance(concat, SmsDeliver) and concat.concat == Concat(1, 2, 1)
    assert concat.text.startswith("Ahoj pavle, tak me vcera nikdo neokradl,")
    wap = decode_incoming(ff_padded(WAP_8BIT))
    assert isinstance(wap, SmsDeliver) and (wap.encoding, len(wap.data)) == ("8bit", 127)
    report = decode_incoming(STATUS_FF)
    assert isinstance(report, StatusReport) and report.outcome == "delivered"


STAMP = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@given(
    encoding=st.sampled_from(["gsm7", "ucs2", "8bit"]),
    concat=st.none() | st.builds(Concat, st.integers(0, 255), st.just(3), st.integers(1, 3)),
    text=st.text(alphabet="abcXYZ 0123@£é", max_size=40),
    tail=st.binary(min_size=1, max_size=60),
)
def test_any_tail_after_the_user_data_is_ignored(
    encoding: str, concat: Concat | None, text: str, tail: bytes
) -> None:
    """Septet counts (7-bit) and octet counts (8-bit, UCS-2), with and without a UDH."""
    data = text.encode() if encoding == "8bit" else b""
    pdu = encode_deliver(
        sender="+12025550147",
        text="" if encoding == "8bit" else text,
        encoding=encoding,  # type: ignore[arg-type]
        timestamp=STAMP,
        concat=concat,
        data=data,
    )
    assert decode_incoming(pdu.hex + tail.hex()) == decode_incoming(pdu.hex)


@pytest.mark.parametrize("pdu", [TRUNCATED_UCS2, ALL_FF, PAST_UDL[:60]])
def test_records_that_really_are_broken_still_raise(pdu: str) -> None:
    with pytest.raises(PduError):
        decode_incoming(pdu)


def test_message_type_of_a_record() -> None:
    assert message_type(PLAIN_GSM7) == MTI_DELIVER
    assert message_type(STORED_SUBMIT) == MTI_SUBMIT
    assert message_type(STATUS_FF) == MTI_STATUS_REPORT
    assert message_type(ALL_FF) == 3  # reserved: FF first octet
    assert message_type("0C") is None and message_type("zz") is None


# ------------------------------------------------------------------ storage listings


def test_cmgl_gives_index_status_and_only_a_hex_line_as_the_pdu() -> None:
    lines = (
        "+CMGL: 1,1,,24",
        PLAIN_GSM7,
        "+CMGL: 2,3,,29",
        STORED_SUBMIT,
        "+CMGL: 3,0,,24",
        "^CEND:1,0,104,16",  # a vendor notification the engine did not know
        PLAIN_GSM7,
        "+CMGL: 4,0,,24",
        "+WIND: 4",
        "+CMGL: 5,0,,24",
    )
    assert cmd.parse_cmgl(lines) == [
        cmd.Stored(1, 1, PLAIN_GSM7),
        cmd.Stored(2, 3, STORED_SUBMIT),
        cmd.Stored(3, 0, PLAIN_GSM7),
    ]


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (("+CMGR: 1,,25", PLAIN_GSM7), cmd.Record(1, PLAIN_GSM7)),
        (("+CMGR: 3,,29", STORED_SUBMIT), cmd.Record(3, STORED_SUBMIT)),
        (("+CMGR: ,,92", PAST_UDL), cmd.Record(None, PAST_UDL)),  # gammu at-sms/39
        (("+CMGR: 0,23", PLAIN_GSM7), cmd.Record(0, PLAIN_GSM7)),  # gammu at-sms/07 form
        (("+CMGR: 0,,24", "^ORIG:1,0", PLAIN_GSM7), cmd.Record(0, PLAIN_GSM7)),
        (("+CMGR: 0,,24", "HANGUP: 1"), None),
        (("+CMGR: 0,,24",), None),
    ],
)
def test_cmgr_takes_only_a_hex_line_as_the_pdu(
    lines: tuple[str, ...], expected: cmd.Record | None
) -> None:
    assert cmd.parse_cmgr(lines) == expected
