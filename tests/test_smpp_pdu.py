from __future__ import annotations

import contextlib
import struct
from collections.abc import Mapping
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.base import ProtocolError
from drivers.smpp.pdu import (
    HEADER_SIZE,
    MAX_PDU_SIZE,
    SPECS,
    TLV_SPECS,
    Command,
    CString,
    Integer,
    OctetString,
    Pdu,
    PduReader,
    SmppDecodeError,
    SmppEncodeError,
    SmppFramingError,
    Tag,
    Value,
    _Malformed,
    decode,
    encode,
)
from drivers.smpp.pdu_quick import quick_body, quick_fields, quick_submit_sm
from drivers.smpp.status import (
    DEFAULT_CLASSES,
    Status,
    classify,
    is_known,
    status_code,
    status_name,
)

CANARY_NUMBER = "12025550147"
CANARY_BODY = b"CANARY potassium 6.9"


def frame_bytes(*parts: str) -> bytes:
    """Octets from hex pieces written field by field, spaces ignored."""
    return bytes.fromhex("".join(parts).replace(" ", ""))


# The mandatory fields of each PDU as the SMPP 3.4 tables (§4) list them, written out
# apart from the codec's SPECS: (name, kind, size), the size of a C-Octet String
# counting its NUL. test_specs_follow_the_smpp_tables holds SPECS to this.
CSTR, INT, OCT = "cstring", "int", "octets"
BIND = (
    ("system_id", CSTR, 16), ("password", CSTR, 9), ("system_type", CSTR, 13),
    ("interface_version", INT, 1), ("addr_ton", INT, 1), ("addr_npi", INT, 1),
    ("address_range", CSTR, 41),
)  # fmt: skip
SHORT_MESSAGE = (
    ("service_type", CSTR, 6), ("source_addr_ton", INT, 1), ("source_addr_npi", INT, 1),
    ("source_addr", CSTR, 21), ("dest_addr_ton", INT, 1), ("dest_addr_npi", INT, 1),
    ("destination_addr", CSTR, 21), ("esm_class", INT, 1), ("protocol_id", INT, 1),
    ("priority_flag", INT, 1), ("schedule_delivery_time", CSTR, 17), ("validity_period", CSTR, 17),
    ("registered_delivery", INT, 1), ("replace_if_present_flag", INT, 1), ("data_coding", INT, 1),
    ("sm_default_msg_id", INT, 1), ("short_message", OCT, 254),
)  # fmt: skip
LAYOUTS: dict[Command, tuple[tuple[str, str, int], ...]] = {
    Command.GENERIC_NACK: (),
    Command.BIND_RECEIVER: BIND,
    Command.BIND_TRANSMITTER: BIND,
    Command.BIND_TRANSCEIVER: BIND,
    Command.BIND_RECEIVER_RESP: (("system_id", CSTR, 16),),
    Command.BIND_TRANSMITTER_RESP: (("system_id", CSTR, 16),),
    Command.BIND_TRANSCEIVER_RESP: (("system_id", CSTR, 16),),
    Command.OUTBIND: (("system_id", CSTR, 16), ("password", CSTR, 9)),
    Command.UNBIND: (),
    Command.UNBIND_RESP: (),
    Command.SUBMIT_SM: SHORT_MESSAGE,
    Command.SUBMIT_SM_RESP: (("message_id", CSTR, 65),),
    Command.DELIVER_SM: SHORT_MESSAGE,
    Command.DELIVER_SM_RESP: (("message_id", CSTR, 65),),
    Command.DATA_SM: (
        ("service_type", CSTR, 6), ("source_addr_ton", INT, 1), ("source_addr_npi", INT, 1),
        ("source_addr", CSTR, 65), ("dest_addr_ton", INT, 1), ("dest_addr_npi", INT, 1),
        ("destination_addr", CSTR, 65), ("esm_class", INT, 1), ("registered_delivery", INT, 1),
        ("data_coding", INT, 1),
    ),
    Command.DATA_SM_RESP: (("message_id", CSTR, 65),),
    Command.QUERY_SM: (
        ("message_id", CSTR, 65), ("source_addr_ton", INT, 1), ("source_addr_npi", INT, 1),
        ("source_addr", CSTR, 21),
    ),
    Command.QUERY_SM_RESP: (
        ("message_id", CSTR, 65), ("final_date", CSTR, 17), ("message_state", INT, 1),
        ("error_code", INT, 1),
    ),
    Command.ENQUIRE_LINK: (),
    Command.ENQUIRE_LINK_RESP: (),
    Command.ALERT_NOTIFICATION: (
        ("source_addr_ton", INT, 1), ("source_addr_npi", INT, 1), ("source_addr", CSTR, 65),
        ("esme_addr_ton", INT, 1), ("esme_addr_npi", INT, 1), ("esme_addr", CSTR, 65),
    ),
}  # fmt: skip
# SMPP 3.4 §5.3.2: (tag, kind, octets on the wire; for a C-Octet String, its maximum).
TLV_TABLE = {
    "message_payload": (0x0424, OCT, None),
    "sar_msg_ref_num": (0x020C, INT, 2),
    "sar_total_segments": (0x020E, INT, 1),
    "sar_segment_seqnum": (0x020F, INT, 1),
    "receipted_message_id": (0x001E, CSTR, 65),
    "message_state": (0x0427, INT, 1),
    "network_error_code": (0x0423, OCT, 3),
    "user_message_reference": (0x0204, INT, 2),
    "more_messages_to_send": (0x0426, INT, 1),
    "source_port": (0x020A, INT, 2),
    "destination_port": (0x020B, INT, 2),
    "sc_interface_version": (0x0210, INT, 1),
}


def layout(field: CString | Integer | OctetString) -> tuple[str, str, int]:
    if isinstance(field, CString):
        return field.name, CSTR, field.max_size
    if isinstance(field, Integer):
        return field.name, INT, field.size
    return field.name, OCT, field.max_size


def test_specs_follow_the_smpp_tables() -> None:
    assert set(SPECS) == set(Command) == set(LAYOUTS)
    for command, expected in LAYOUTS.items():
        assert tuple(layout(f) for f in SPECS[command].fields) == expected, command.name


def test_known_tlvs_follow_the_smpp_tables() -> None:
    for name, (tag, kind, size) in TLV_TABLE.items():
        spec = TLV_SPECS[tag]
        assert Tag(tag).name.lower() == name
        assert spec.kind == kind, name
        if kind == INT or name == "network_error_code":
            assert spec.min_size == spec.max_size == size, name
        elif size is not None:
            assert spec.max_size == size, name


# Byte vectors. bind_transmitter is the example PDU of the SMPP 3.4 specification;
# the others are assembled here field by field from the specification's tables.

SUBMIT_SM_PARAMS: dict[str, Value] = {
    "service_type": "",
    "source_addr_ton": 5,
    "source_addr_npi": 0,
    "source_addr": "HOSPITAL",
    "dest_addr_ton": 1,
    "dest_addr_npi": 1,
    "destination_addr": "12025550100",
    "esm_class": 0,
    "protocol_id": 0,
    "priority_flag": 0,
    "schedule_delivery_time": "",
    "validity_period": "",
    "registered_delivery": 1,
    "replace_if_present_flag": 0,
    "data_coding": 0,
    "sm_default_msg_id": 0,
    "short_message": b"Hello",
}
RECEIPT_TEXT = (
    b"id:0123456789 sub:001 dlvrd:001 submit date:2401011030 done date:2401011031 "
    b"stat:DELIVRD err:000 text:"
)
DELIVER_SM_PARAMS: dict[str, Value] = {
    **SUBMIT_SM_PARAMS,
    "source_addr_ton": 1,
    "source_addr_npi": 1,
    "source_addr": "12025550100",
    "dest_addr_ton": 5,
    "dest_addr_npi": 0,
    "destination_addr": "HOSPITAL",
    "esm_class": 0x04,
    "registered_delivery": 0,
    "short_message": RECEIPT_TEXT,
}
HOSPITAL = "484F53504954414C 00"
NUMBER = "3132303235353530313030 00"

DATA_SM_PARAMS: dict[str, Value] = {
    "service_type": "", "source_addr_ton": 1, "source_addr_npi": 1,
    "source_addr": "12025550100", "dest_addr_ton": 5, "dest_addr_npi": 0,
    "destination_addr": "HOSPITAL", "esm_class": 0, "registered_delivery": 1, "data_coding": 8,
}  # fmt: skip
QUERY_SM_PARAMS: dict[str, Value] = {
    "message_id": "ABC123", "source_addr_ton": 5, "source_addr_npi": 0, "source_addr": "HOSPITAL",
}  # fmt: skip
ALERT_PARAMS: dict[str, Value] = {
    "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": "12025550100",
    "esme_addr_ton": 5, "esme_addr_npi": 0, "esme_addr": "HOSPITAL",
}  # fmt: skip
SMPP3TEST_BIND: dict[str, Value] = {
    "system_id": "SMPP3TEST", "password": "secret08", "system_type": "SUBMIT1",
    "interface_version": 0, "addr_ton": 1, "addr_npi": 1, "address_range": "",
}  # fmt: skip
RECEIPT_TLVS: dict[int, Value] = {
    Tag.RECEIPTED_MESSAGE_ID: "0123456789",
    Tag.MESSAGE_STATE: 2,
    Tag.NETWORK_ERROR_CODE: b"\x03\x00\x00",
}

# fmt: off
VECTORS: list[tuple[str, bytes, Pdu]] = [
    ("enquire_link", frame_bytes("00000010 00000015 00000000 00000001"),
     Pdu(Command.ENQUIRE_LINK, 1)),
    ("enquire_link_resp", frame_bytes("00000010 80000015 00000000 00000001"),
     Pdu(Command.ENQUIRE_LINK_RESP, 1)),
    ("generic_nack ESME_RINVCMDID", frame_bytes("00000010 80000000 00000003 00000009"),
     Pdu(Command.GENERIC_NACK, 9, Status.ESME_RINVCMDID)),
    ("unbind", frame_bytes("00000010 00000006 00000000 00000003"), Pdu(Command.UNBIND, 3)),
    ("bind_transmitter (SMPP 3.4 example)", frame_bytes(
        "0000002F 00000002 00000000 00000001",
        "534D50503354455354 00",  # system_id SMPP3TEST
        "7365637265743038 00",  # password secret08
        "5355424D495431 00",  # system_type SUBMIT1
        "00 01 01",  # interface_version, addr_ton, addr_npi
        "00",  # address_range
    ), Pdu(Command.BIND_TRANSMITTER, 1, params=SMPP3TEST_BIND)),
    ("bind_transceiver_resp with sc_interface_version",
     frame_bytes("0000001A 80000009 00000000 00000001", "534D534300", "0210 0001 34"),
     Pdu(Command.BIND_TRANSCEIVER_RESP, 1, params={"system_id": "SMSC"},
         tlvs={Tag.SC_INTERFACE_VERSION: 0x34})),
    ("outbind", frame_bytes("00000018 0000000B 00000000 00000001", "534D534300", "707700"),
     Pdu(Command.OUTBIND, 1, params={"system_id": "SMSC", "password": "pw"})),
    ("submit_sm", frame_bytes(
        "00000039 00000004 00000000 00000002",
        "00",  # service_type
        "05 00",  # source_addr_ton alphanumeric, source_addr_npi
        HOSPITAL,
        "01 01",  # dest_addr_ton international, dest_addr_npi E.164
        NUMBER,
        "00 00 00",  # esm_class, protocol_id, priority_flag
        "00 00",  # schedule_delivery_time, validity_period
        "01 00 00 00",  # registered_delivery, replace_if_present, data_coding, default_msg
        "05 48656C6C6F",  # sm_length 5, "Hello"
    ), Pdu(Command.SUBMIT_SM, 2, params=SUBMIT_SM_PARAMS)),
    ("submit_sm_resp",
     frame_bytes("0000001B 80000004 00000000 00000002", "30313233343536373839 00"),
     Pdu(Command.SUBMIT_SM_RESP, 2, params={"message_id": "0123456789"})),
    ("submit_sm_resp ESME_RTHROTTLED without a body",
     frame_bytes("00000010 80000004 00000058 00000002"),
     Pdu(Command.SUBMIT_SM_RESP, 2, Status.ESME_RTHROTTLED)),
    ("deliver_sm receipt", frame_bytes(
        "000000B5 00000005 00000000 00000115",
        "00 01 01", NUMBER, "05 00", HOSPITAL,
        "04 00 00 00 00 00 00 00 00",  # esm_class 0x04: SMSC delivery receipt
        "66", RECEIPT_TEXT.hex(),
        "001E 000B 30313233343536373839 00",  # receipted_message_id
        "0427 0001 02",  # message_state DELIVERED
        "0423 0003 030000",  # network_error_code: GSM, 0
    ), Pdu(Command.DELIVER_SM, 0x115, params=DELIVER_SM_PARAMS, tlvs=RECEIPT_TLVS)),
    ("deliver_sm_resp", frame_bytes("00000011 80000005 00000000 00000115", "00"),
     Pdu(Command.DELIVER_SM_RESP, 0x115, params={"message_id": ""})),
    ("data_sm with message_payload", frame_bytes(
        "00000035 00000103 00000000 00000004",
        "00 01 01", NUMBER, "05 00", HOSPITAL,
        "00 01 08",  # esm_class, registered_delivery, data_coding UCS-2
        "0424 0004 00480069",  # message_payload "Hi"
    ), Pdu(Command.DATA_SM, 4, params=DATA_SM_PARAMS,
           tlvs={Tag.MESSAGE_PAYLOAD: "Hi".encode("utf-16-be")})),
    ("query_sm", frame_bytes(
        "00000022 00000003 00000000 00000005", "414243313233 00", "05 00", HOSPITAL,
    ), Pdu(Command.QUERY_SM, 5, params=QUERY_SM_PARAMS)),
    ("query_sm_resp", frame_bytes(
        "0000002A 80000003 00000000 00000005",
        "414243313233 00",
        "3234303130313130333130303030342B 00",  # final_date 240101103100004+
        "02 00",
    ), Pdu(Command.QUERY_SM_RESP, 5, params={
        "message_id": "ABC123", "final_date": "240101103100004+", "message_state": 2,
        "error_code": 0,
    })),
    ("alert_notification", frame_bytes(
        "0000002E 00000102 00000000 00000006",
        "01 01", NUMBER, "05 00", HOSPITAL,
        "0422 0001 00",  # ms_availability_status available
    ), Pdu(Command.ALERT_NOTIFICATION, 6, params=ALERT_PARAMS,
           tlvs={Tag.MS_AVAILABILITY_STATUS: 0})),
]
# fmt: on
VECTORS_BY_NAME = {name: wire for name, wire, _ in VECTORS}


@pytest.mark.parametrize(("wire", "pdu"), [v[1:] for v in VECTORS], ids=[v[0] for v in VECTORS])
def test_vector_decodes_and_encodes(wire: bytes, pdu: Pdu) -> None:
    assert decode(wire) == pdu
    assert encode(pdu) == wire


def test_unknown_tlvs_are_kept_in_order_and_re_encoded_unchanged() -> None:
    wire = frame_bytes(
        "00000031 80000004 00000000 00000002",
        "30313233343536373839 00",
        "1501 0003 414243",  # vendor specific
        "0005 0001 07",  # dest_addr_subunit, known
        "1400 0000",  # vendor specific, empty
        "FFFF 0002 0001",
    )
    pdu = decode(wire)
    assert list(pdu.tlvs.items()) == [
        (0x1501, b"ABC"),
        (Tag.DEST_ADDR_SUBUNIT, 7),
        (0x1400, b""),
        (0xFFFF, b"\x00\x01"),
    ]
    assert encode(pdu) == wire


def test_receipted_message_id_without_its_nul_is_accepted() -> None:
    pdu = Pdu(Command.DELIVER_SM, 7, params=DELIVER_SM_PARAMS)
    wire = with_length_fixed(encode(pdu) + frame_bytes("001E 0004 41424344"))
    assert decode(wire).tlv(Tag.RECEIPTED_MESSAGE_ID, str) == "ABCD"


def test_smpplib_reads_what_we_write_and_we_read_what_it_writes() -> None:
    smpp = pytest.importorskip("smpplib.smpp")

    class Sequences:
        sequence = 0

        def next_sequence(self) -> int:
            return 1

    deliver_frame = VECTORS_BY_NAME["deliver_sm receipt"]
    theirs = smpp.parse_pdu(deliver_frame, client=Sequences())
    assert theirs.receipted_message_id == b"0123456789"
    assert theirs.short_message == RECEIPT_TEXT
    assert theirs.source_addr == b"12025550100"
    built = smpp.make_pdu("submit_sm", client=Sequences(), **SUBMIT_SM_PARAMS)
    built.sequence = 2
    assert decode(built.generate()) == Pdu(Command.SUBMIT_SM, 2, params=SUBMIT_SM_PARAMS)


# Strategies: valid PDUs of every type, from the tables above.

LATIN1_NO_NUL = st.characters(min_codepoint=1, max_codepoint=255)


def field_values(kind: str, size: int) -> st.SearchStrategy[Value]:
    if kind == CSTR:
        return st.text(LATIN1_NO_NUL, max_size=size - 1)
    if kind == INT:
        return st.integers(0, (1 << (8 * size)) - 1)
    return st.binary(max_size=size)


def tlv_values(tag: int) -> st.SearchStrategy[Value]:
    spec = TLV_SPECS.get(tag)
    if spec is None:
        return st.binary(max_size=300)
    if spec.kind == "int":
        return st.integers(0, (1 << (8 * spec.max_size)) - 1)
    if spec.kind == "cstring":
        return st.text(LATIN1_NO_NUL, max_size=spec.max_size - 1)
    return st.binary(min_size=spec.min_size, max_size=min(spec.max_size, 300))


@st.composite
def tlv_maps(draw: st.DrawFn) -> dict[int, Value]:
    tags = draw(
        st.lists(
            st.one_of(st.sampled_from(sorted(TLV_SPECS)), st.integers(0, 0xFFFF)),
            max_size=6,
            unique=True,
        )
    )
    return {tag: draw(tlv_values(tag)) for tag in tags}


@st.composite
def pdus(draw: st.DrawFn, command: Command) -> Pdu:
    status = draw(st.sampled_from([0, 0x58]) | st.integers(0, 0xFFFFFFFF))
    sequence = draw(st.integers(0, 0xFFFFFFFF))
    if command.is_response and status != 0 and draw(st.booleans()):
        return Pdu(command, sequence, status)  # the body an error response may omit
    params = {name: draw(field_values(kind, size)) for name, kind, size in LAYOUTS[command]}
    tlvs = draw(tlv_maps()) if SPECS[command].takes_tlvs else {}
    return Pdu(command, sequence, status, params, tlvs)


any_pdu = st.sampled_from(list(Command)).flatmap(pdus)


@pytest.mark.parametrize("command", list(Command), ids=lambda c: c.name.lower())
@given(data=st.data())
def test_round_trip_every_pdu_type(command: Command, data: st.DataObject) -> None:
    pdu = data.draw(pdus(command))
    wire = encode(pdu)
    assert decode(wire) == pdu
    assert encode(decode(wire)) == wire
    assert int.from_bytes(wire[:4], "big") == len(wire)


# Decode errors: each carries the status to answer with, and nothing from the body.


def submit_sm_with(**changes: Value) -> bytes:
    return encode(Pdu(Command.SUBMIT_SM, 77, params={**SUBMIT_SM_PARAMS, **changes}))


def with_length_fixed(wire: bytes) -> bytes:
    return len(wire).to_bytes(4, "big") + wire[4:]


def replace_once(wire: bytes, old: bytes, new: bytes) -> bytes:
    assert wire.count(old) == 1
    return with_length_fixed(wire.replace(old, new))


SOURCE = b"HOSPITAL\0"
DESTINATION = f"{CANARY_NUMBER}\0".encode()


def with_tlvs(hex_tlvs: str) -> bytes:
    return with_length_fixed(submit_sm_with() + frame_bytes(hex_tlvs))


# fmt: off
DECODE_ERRORS = [
    pytest.param(replace_once(submit_sm_with(), SOURCE, b"H" * 25 + b"\0"),
                 Status.ESME_RINVSRCADR, id="source_addr too long"),
    pytest.param(replace_once(submit_sm_with(destination_addr=CANARY_NUMBER), DESTINATION,
                              CANARY_NUMBER.encode() * 3 + b"\0"),
                 Status.ESME_RINVDSTADR, id="destination_addr too long"),
    pytest.param(replace_once(submit_sm_with(), b"\x05Hello", b"\x09Hello"),
                 Status.ESME_RINVMSGLEN, id="sm_length past the end"),
    pytest.param(replace_once(submit_sm_with(), b"\x05Hello", b"\xff" + b"x" * 255),
                 Status.ESME_RINVMSGLEN, id="sm_length 255 with 255 octets"),
    pytest.param(with_length_fixed(submit_sm_with()[:20]),
                 Status.ESME_RINVSRCADR, id="body ends in source_addr"),
    pytest.param(with_tlvs("0424 00"), Status.ESME_RINVOPTPARSTREAM, id="TLV header cut"),
    pytest.param(with_tlvs("0424 0009 4142"), Status.ESME_RINVOPTPARSTREAM,
                 id="TLV value past the end"),
    pytest.param(with_tlvs("020C 0001 05"), Status.ESME_RINVPARLEN,
                 id="sar_msg_ref_num one octet"),
    pytest.param(with_tlvs("001E 0003 41 00 42"), Status.ESME_RINVOPTPARAMVAL,
                 id="NUL inside receipted_message_id"),
    pytest.param(with_tlvs("1400 0001 01 1400 0001 02"), Status.ESME_RINVOPTPARSTREAM,
                 id="TLV repeated"),
    pytest.param(frame_bytes("00000011 00000015 00000000 0000004D 00"),
                 Status.ESME_RINVCMDLEN, id="enquire_link with a body"),
    pytest.param(frame_bytes("00000020 00000015 00000000 0000004D"),
                 Status.ESME_RINVCMDLEN, id="command_length disagrees"),
    pytest.param(frame_bytes("00000010 00000099 00000000 0000004D"),
                 Status.ESME_RINVCMDID, id="unknown command_id"),
    pytest.param(frame_bytes("00000010 00000004 00000000 0000004D"),
                 Status.ESME_RINVSERTYP, id="submit_sm without a body"),
]
# fmt: on


@pytest.mark.parametrize(("wire", "status"), DECODE_ERRORS)
def test_decode_errors_carry_the_status_to_answer(wire: bytes, status: Status) -> None:
    with pytest.raises(SmppDecodeError) as caught:
        decode(wire)
    error = caught.value
    assert error.command_status == status
    assert error.code == status_code(status)
    assert error.sequence == 0x4D
    assert error.command_id == int.from_bytes(wire[4:8], "big")
    assert error.remote is True
    assert isinstance(error, ProtocolError)
    assert CANARY_NUMBER not in str(error)


def test_decode_error_without_a_header_knows_no_sequence() -> None:
    with pytest.raises(SmppDecodeError) as caught:
        decode(b"\x00\x00\x00\x10\x00")
    assert (caught.value.command_status, caught.value.sequence) == (Status.ESME_RINVCMDLEN, None)


def test_a_decode_error_becomes_a_generic_nack() -> None:
    with pytest.raises(SmppDecodeError) as caught:
        decode(frame_bytes("00000010 00000099 00000000 00000009"))
    error = caught.value
    assert error.sequence is not None
    nack = Pdu(Command.GENERIC_NACK, error.sequence, error.command_status)
    assert encode(nack) == VECTORS_BY_NAME["generic_nack ESME_RINVCMDID"]


# Encode errors: this side's mistakes, reported as local protocol errors.


@pytest.mark.parametrize(
    ("pdu", "status"),
    [
        (
            Pdu(Command.SUBMIT_SM, 1, params={"destination_addr": "1" * 21}),
            Status.ESME_RINVDSTADR,
        ),
        (Pdu(Command.SUBMIT_SM, 1, params={"source_addr": "Ω"}), Status.ESME_RINVSRCADR),
        (Pdu(Command.SUBMIT_SM, 1, params={"source_addr": "a\0b"}), Status.ESME_RINVSRCADR),
        (Pdu(Command.SUBMIT_SM, 1, params={"short_message": b"x" * 255}), Status.ESME_RINVMSGLEN),
        (Pdu(Command.SUBMIT_SM, 1, params={"short_message": "text"}), Status.ESME_RINVMSGLEN),
        (Pdu(Command.SUBMIT_SM, 1, params={"esm_class": 256}), Status.ESME_RINVESMCLASS),
        (Pdu(Command.SUBMIT_SM, 1, params={"sm_length": 3}), Status.ESME_RSYSERR),
        (Pdu(Command.SUBMIT_SM, 1, tlvs={Tag.SAR_MSG_REF_NUM: 70000}), Status.ESME_RINVOPTPARAMVAL),
        (Pdu(Command.SUBMIT_SM, 1, tlvs={Tag.NETWORK_ERROR_CODE: b"12"}), Status.ESME_RINVPARLEN),
        (Pdu(Command.SUBMIT_SM, 1, tlvs={0x1400: "text"}), Status.ESME_RINVPARLEN),
        (Pdu(Command.SUBMIT_SM, 1, tlvs={0x10000: b""}), Status.ESME_RINVOPTPARSTREAM),
        (Pdu(Command.ENQUIRE_LINK, 1, tlvs={0x1400: b""}), Status.ESME_ROPTPARNOTALLWD),
        (Pdu(Command.ENQUIRE_LINK, 2**32), Status.ESME_RSYSERR),
        (Pdu(Command.ENQUIRE_LINK, 1, status=-1), Status.ESME_RSYSERR),
    ],
)
def test_encode_refuses_what_the_wire_cannot_carry(pdu: Pdu, status: Status) -> None:
    with pytest.raises(SmppEncodeError) as caught:
        encode(pdu)
    assert caught.value.command_status == status
    assert caught.value.remote is False


def test_missing_fields_encode_as_empty_values() -> None:
    pdu = decode(encode(Pdu(Command.SUBMIT_SM, 3, params={"destination_addr": "12025550100"})))
    assert pdu.param("destination_addr", str) == "12025550100"
    assert pdu.param("short_message", bytes) == b""
    assert pdu.param("esm_class", int) == 0


def test_pdu_accessors_and_response() -> None:
    pdu = {name: p for name, _, p in VECTORS}["deliver_sm receipt"]
    assert pdu.tlv(Tag.MESSAGE_STATE, int) == 2
    assert pdu.tlv(Tag.SAR_MSG_REF_NUM, int) is None
    with pytest.raises(TypeError, match="not str"):
        pdu.tlv(Tag.MESSAGE_STATE, str)
    with pytest.raises(TypeError, match="not bytes"):
        pdu.param("source_addr", bytes)
    answer = pdu.response()
    assert (answer.command, answer.sequence, answer.status) == (Command.DELIVER_SM_RESP, 0x115, 0)
    assert encode(answer)[4:8] == b"\x80\x00\x00\x05"
    with pytest.raises(ValueError, match="response"):
        answer.response()
    with pytest.raises(ValueError, match="not a valid Command"):
        Pdu(Command.ALERT_NOTIFICATION, 1).response()


def test_repr_shows_no_addresses_or_bodies() -> None:
    pdu = Pdu(
        Command.SUBMIT_SM,
        1,
        params={"destination_addr": CANARY_NUMBER, "short_message": CANARY_BODY},
        tlvs={Tag.MESSAGE_PAYLOAD: CANARY_BODY},
    )
    text = repr(pdu)
    assert "submit_sm" in text and "0x0424" in text
    assert CANARY_NUMBER not in text and "CANARY" not in text


# Framing a TCP stream.

STREAM_PDUS = [pdu for _, _, pdu in VECTORS]
STREAM = b"".join(wire for _, wire, _ in VECTORS)


def drain(reader: PduReader) -> list[Pdu]:
    out = []
    while (pdu := reader.next_pdu()) is not None:
        out.append(pdu)
    return out


def test_several_pdus_in_one_chunk() -> None:
    reader = PduReader()
    reader.feed(STREAM)
    assert drain(reader) == STREAM_PDUS
    assert reader.buffered == 0


def test_split_at_every_byte_boundary() -> None:
    for cut in range(len(STREAM) + 1):
        reader = PduReader()
        reader.feed(STREAM[:cut])
        first = drain(reader)
        reader.feed(STREAM[cut:])
        assert first + drain(reader) == STREAM_PDUS, cut


def test_one_byte_at_a_time() -> None:
    reader = PduReader()
    seen: list[Pdu] = []
    for index in range(len(STREAM)):
        reader.feed(STREAM[index : index + 1])
        seen += drain(reader)
    assert seen == STREAM_PDUS


@given(
    st.lists(any_pdu, min_size=1, max_size=5),
    st.lists(st.integers(0, 2000), max_size=8),
)
def test_random_chunking_yields_the_same_pdus(sent: list[Pdu], cuts: list[int]) -> None:
    stream = b"".join(encode(pdu) for pdu in sent)
    reader = PduReader()
    received: list[Pdu] = []
    bounds = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    for start, end in pairwise(bounds):
        reader.feed(stream[start:end])
        received += drain(reader)
    assert received == sent


@pytest.mark.parametrize("length", [2**31, 2**32 - 1, MAX_PDU_SIZE + 1, 15, 0])
def test_bad_command_length_is_refused_from_the_first_four_octets(length: int) -> None:
    reader = PduReader()
    with pytest.raises(SmppFramingError) as caught:
        reader.feed(length.to_bytes(4, "big"))
    assert caught.value.command_status == Status.ESME_RINVCMDLEN
    assert reader.buffered == 4
    with pytest.raises(SmppFramingError):
        reader.feed(b"\x00" * 1000)
    with pytest.raises(SmppFramingError):
        reader.next_pdu()
    assert reader.buffered == 4


def test_framing_error_after_good_frames_keeps_them_and_names_the_sequence() -> None:
    reader = PduReader(max_pdu_size=1024)
    enquire = encode(Pdu(Command.ENQUIRE_LINK, 1))
    reader.feed(enquire + frame_bytes("00100000 00000004 00000000 0000002A"))
    assert reader.next_pdu() == Pdu(Command.ENQUIRE_LINK, 1)
    with pytest.raises(SmppFramingError) as caught:
        reader.next_pdu()
    assert (caught.value.command_id, caught.value.sequence) == (Command.SUBMIT_SM, 0x2A)


def test_configured_maximum_refuses_a_larger_valid_pdu() -> None:
    big = encode(Pdu(Command.DATA_SM, 1, tlvs={Tag.MESSAGE_PAYLOAD: b"x" * 500}))
    reader = PduReader(max_pdu_size=256)
    with pytest.raises(SmppFramingError):
        reader.feed(big)
    with pytest.raises(ValueError, match="at least 16"):
        PduReader(max_pdu_size=15)


def test_a_bad_frame_of_good_length_is_consumed_and_reading_goes_on() -> None:
    reader = PduReader()
    unknown = frame_bytes("00000010 00000099 00000000 00000007")
    reader.feed(unknown + encode(Pdu(Command.ENQUIRE_LINK, 8)))
    with pytest.raises(SmppDecodeError) as caught:
        reader.next_pdu()
    assert not isinstance(caught.value, SmppFramingError)
    assert caught.value.sequence == 7
    assert reader.next_pdu() == Pdu(Command.ENQUIRE_LINK, 8)


# Fuzzing: whatever arrives, decoding raises SmppDecodeError or returns a PDU.


def decode_or_error(wire: bytes) -> Pdu | SmppDecodeError:
    try:
        return decode(wire)
    except SmppDecodeError as error:
        return error


def assert_decodes_or_refuses(wire: bytes) -> None:
    outcome = decode_or_error(wire)
    if isinstance(outcome, SmppDecodeError):
        assert is_known(outcome.command_status)
        assert outcome.code == status_code(outcome.command_status)
    else:
        assert decode(encode(outcome)) == outcome


def assert_reader_survives(stream: bytes) -> None:
    reader = PduReader(max_pdu_size=4096)
    with contextlib.suppress(SmppFramingError):
        reader.feed(stream)
        while (frame := reader.next_frame()) is not None:
            assert_decodes_or_refuses(frame)


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_random_bytes(wire: bytes) -> None:
    assert_decodes_or_refuses(wire)
    assert_reader_survives(wire)


@settings(max_examples=300)
@given(st.sampled_from(sorted(SPECS)), st.integers(0, 0xFFFFFFFF), st.binary(max_size=300))
def test_random_bodies_behind_a_valid_header(command_id: int, status: int, body: bytes) -> None:
    wire = struct.pack(">IIII", 16 + len(body), command_id, status, 1) + body
    assert_decodes_or_refuses(wire)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    wire = bytearray(encode(draw(any_pdu)))
    mutation = draw(st.sampled_from(["flip", "truncate", "extend", "length"]))
    if mutation == "flip":
        for _ in range(draw(st.integers(1, 4))):
            wire[draw(st.integers(0, len(wire) - 1))] = draw(st.integers(0, 255))
    elif mutation == "truncate":
        del wire[draw(st.integers(0, len(wire) - 1)) :]
    elif mutation == "extend":
        wire += draw(st.binary(min_size=1, max_size=16))
    else:
        wire[0:4] = draw(st.integers(0, 0xFFFFFFFF)).to_bytes(4, "big")
    if mutation in ("truncate", "extend") and len(wire) >= 4 and draw(st.booleans()):
        wire[0:4] = len(wire).to_bytes(4, "big")
    return bytes(wire)


@settings(max_examples=1000)
@given(mutated_frames())
def test_mutated_valid_pdus(wire: bytes) -> None:
    assert_decodes_or_refuses(wire)
    assert_reader_survives(wire + encode(Pdu(Command.ENQUIRE_LINK, 1)))


# command_status table and classes (REL-10).


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ESME_ROK", 0x00), ("ESME_RINVMSGLEN", 0x01), ("ESME_RINVCMDLEN", 0x02),
        ("ESME_RINVCMDID", 0x03), ("ESME_RSYSERR", 0x08), ("ESME_RINVSRCADR", 0x0A),
        ("ESME_RINVDSTADR", 0x0B), ("ESME_RMSGQFUL", 0x14), ("ESME_RSUBMITFAIL", 0x45),
        ("ESME_RINVDSTTON", 0x50), ("ESME_RINVDSTNPI", 0x51), ("ESME_RTHROTTLED", 0x58),
        ("ESME_RINVSCHED", 0x61), ("ESME_RINVEXPIRY", 0x62), ("ESME_RX_T_APPN", 0x64),
        ("ESME_RX_P_APPN", 0x65), ("ESME_RX_R_APPN", 0x66), ("ESME_RQUERYFAIL", 0x67),
        ("ESME_RINVOPTPARSTREAM", 0xC0), ("ESME_RINVOPTPARAMVAL", 0xC4),
        ("ESME_RDELIVERYFAILURE", 0xFE), ("ESME_RUNKNOWNERR", 0xFF),
    ],
)  # fmt: skip
def test_status_values_match_smpp_3_4(name: str, value: int) -> None:
    assert Status[name] == value


def test_status_table_is_complete() -> None:
    assert len(Status) == 48
    assert set(DEFAULT_CLASSES) == set(Status) - {Status.ESME_ROK}


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (0x58, "throttle"),
        (0x14, "throttle"),
        (0x08, "transient"),
        (0x61, "transient"),
        (0x64, "transient"),
        (0x0B, "permanent"),
        (0x0A, "permanent"),
        (0x45, "permanent"),
        (0x62, "permanent"),
        (0x50, "permanent"),
        (0x400, "transient"),
        (0x7FFFFFFF, "transient"),
    ],
)
def test_default_classes_follow_rel_10(status: int, expected: str) -> None:
    assert classify(status) == expected


def test_overrides_win_and_are_checked() -> None:
    overrides: Mapping[int, str] = {0x45: "transient", 0x400: "permanent"}
    assert classify(Status.ESME_RSUBMITFAIL, overrides) == "transient"
    assert classify(0x400, overrides) == "permanent"
    assert classify(Status.ESME_RTHROTTLED, overrides) == "throttle"
    with pytest.raises(ValueError, match="unknown class"):
        classify(0x45, {0x45: "retry"})
    with pytest.raises(ValueError, match="not an error"):
        classify(Status.ESME_ROK)


def test_status_names_and_codes() -> None:
    assert status_name(0x58) == "ESME_RTHROTTLED"
    assert status_name(0x401) == "0x00000401"
    assert status_code(Status.ESME_RINVCMDID) == "smpp:0x00000003"


# -- the quick ways (fewer steps for good values) against the checked fields -----------

any_value = st.one_of(
    st.integers(-2, 300),
    st.booleans(),
    st.text(max_size=24),
    st.binary(max_size=260),
    st.none(),
)


@given(st.sampled_from(sorted(SPECS)), st.data())
def test_quick_encoding_writes_what_the_fields_write_or_raises(
    command_id: int, data: st.DataObject
) -> None:
    """`quick_body` (issue 16: CPU per submit) gives exactly the bytes the fields'
    checked `write`s give, and refuses exactly what they refuse."""
    spec = SPECS[command_id]
    names = [f.name for f in spec.fields]
    params = data.draw(st.dictionaries(st.sampled_from(names), any_value)) if names else {}
    checked = bytearray()
    try:
        for f in spec.fields:
            f.write(params.get(f.name, f.default), checked)
    except _Malformed:
        checked_ok = False
    else:
        checked_ok = True
    try:
        quick: bytes | None = quick_body(spec.steps, params)
    except Exception:  # the encoder then takes the checked way, which names the field
        quick = None
    assert quick == (bytes(checked) if checked_ok else None)


SUBMIT_SM_NAMES = [f.name for f in SPECS[Command.SUBMIT_SM].fields]


@given(st.dictionaries(st.sampled_from(SUBMIT_SM_NAMES), any_value))
def test_a_submit_sm_written_out_encodes_as_its_steps_walked(params: dict[str, Value]) -> None:
    """`quick_submit_sm`, the encoder every submit_sm takes, gives `quick_body`'s octets
    for the submit_sm's steps, and refuses what it refuses."""
    assert SPECS[Command.SUBMIT_SM].quick is quick_submit_sm
    try:
        walked: bytes | None = quick_body(SPECS[Command.SUBMIT_SM].steps, params)
    except Exception:
        walked = None
    try:
        written: bytes | None = quick_submit_sm(params)
    except Exception:
        written = None
    assert written == walked


@given(st.sampled_from(sorted(SPECS)), st.binary(max_size=300))
def test_quick_decoding_reads_what_the_fields_read_or_gives_up(
    command_id: int, body: bytes
) -> None:
    spec = SPECS[command_id]
    frame = bytes(HEADER_SIZE) + body
    quick = quick_fields(spec.steps, frame, HEADER_SIZE)
    params: dict[str, object] = {}
    pos = HEADER_SIZE
    try:
        for f in spec.fields:
            params[f.name], pos = f.read(frame, pos)
    except _Malformed:
        assert quick is None
    else:
        assert quick == (params, pos)
