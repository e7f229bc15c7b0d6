"""SMPP 3.4 PDUs: declarative specs, `encode`, `decode`, and a framer for a TCP stream.

Theory of operation. A PDU is a 16-octet header (command_length, counting the header;
command_id; command_status; sequence_number: big-endian uint32) and a body: the
command's mandatory fields in a fixed order, then, for commands that take them, TLVs
(two-octet tag, two-octet length, value). Each command is declared once in `SPECS` as a
`PduSpec`: its ordered fields, each of one of three kinds, and whether TLVs may follow.

- `CString`: octets up to a NUL. `max_size` counts the NUL, as the specification's
  tables do (source_addr "Var. max 21" holds 20 characters). Values are `str`, decoded
  as Latin-1 so that every octet a peer sends survives a decode and re-encode.
- `Integer`: 1, 2 or 4 octets, unsigned; values are `int`.
- `OctetString`: octets counted by a one-octet field just before them (`sm_length`
  before `short_message`); values are `bytes`, and the count is derived, never stored.

Each field carries the command_status to answer when it cannot be decoded, whatever the
reason (no NUL within its size, the body ends inside it, a count beyond its maximum):
ESME_RINVSRCADR for source_addr, ESME_RINVMSGLEN for short_message, ESME_RINVCMDLEN for
fields without a status of their own. TLVs in `TLV_SPECS` decode to `int`, `str` or
`bytes` by kind; any other tag is kept as raw `bytes` and encoded back unchanged, in the
order received. A TLV of the wrong length is ESME_RINVPARLEN, a bad value
ESME_RINVOPTPARAMVAL, a broken TLV stream or a repeated tag ESME_RINVOPTPARSTREAM.
A response whose command_status is not ESME_ROK may come without a body (SMPP 3.4
§4.1.2 and others): it decodes with empty `params`, and encodes so when it has none.

`decode` raises only `SmppDecodeError`, carrying the status to answer with and, when
the header got that far, the command_id and sequence_number. `PduReader` splits a byte
stream on command_length and refuses a length below 16 or above its maximum as soon as
four octets of a header are buffered, before reading the rest: that `SmppFramingError`
means the stream is out of step and the link must be reset. A frame of good length that
fails to decode is consumed first, so the caller can answer it and read on. No error
message holds a field value: addresses and bodies are patient data.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar, Literal, TypeVar

from drivers.base import ProtocolError
from drivers.smpp.pdu_quick import (
    CSTRING,
    INTS,
    OCTETS,
    SUBMIT_SM_STEPS,
    WIDE,
    Step,
    quick_body,
    quick_fields,
    quick_submit_sm,
)
from drivers.smpp.status import Status, status_code

HEADER_SIZE = 16
MAX_PDU_SIZE = 64 * 1024
RESPONSE_BIT = 0x80000000

Value = int | str | bytes
V = TypeVar("V", int, str, bytes)

_HEADER = struct.Struct(">IIII")
_TLV_HEADER = struct.Struct(">HH")


class Command(enum.IntEnum):
    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103

    @property
    def is_response(self) -> bool:
        return bool(self & RESPONSE_BIT)

    @property
    def response(self) -> Command:
        """The command that answers this one; ValueError for outbind, alert_notification."""
        if self.is_response:
            raise ValueError(f"{self.name.lower()} is a response")
        return Command(self | RESPONSE_BIT)


class Tag(enum.IntEnum):
    """TLV tags this codec decodes to typed values (SMPP 3.4 §5.3.2)."""

    DEST_ADDR_SUBUNIT = 0x0005
    DEST_NETWORK_TYPE = 0x0006
    DEST_BEARER_TYPE = 0x0007
    SOURCE_ADDR_SUBUNIT = 0x000D
    SOURCE_NETWORK_TYPE = 0x000E
    SOURCE_BEARER_TYPE = 0x000F
    QOS_TIME_TO_LIVE = 0x0017
    PAYLOAD_TYPE = 0x0019
    ADDITIONAL_STATUS_INFO_TEXT = 0x001D
    RECEIPTED_MESSAGE_ID = 0x001E
    MS_MSG_WAIT_FACILITIES = 0x0030
    PRIVACY_INDICATOR = 0x0201
    USER_MESSAGE_REFERENCE = 0x0204
    USER_RESPONSE_CODE = 0x0205
    SOURCE_PORT = 0x020A
    DESTINATION_PORT = 0x020B
    SAR_MSG_REF_NUM = 0x020C
    LANGUAGE_INDICATOR = 0x020D
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    CALLBACK_NUM_PRES_IND = 0x0302
    NUMBER_OF_MESSAGES = 0x0304
    DPF_RESULT = 0x0420
    SET_DPF = 0x0421
    MS_AVAILABILITY_STATUS = 0x0422
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    DELIVERY_FAILURE_REASON = 0x0425
    MORE_MESSAGES_TO_SEND = 0x0426
    MESSAGE_STATE = 0x0427


class SmppCodecError(ProtocolError):
    """A PDU that cannot be encoded or decoded; `command_status` is the SMPP answer.

    `command_id` and `sequence` are None when the header did not get that far."""

    caused_by_peer: ClassVar[bool] = True

    def __init__(
        self,
        message: str,
        *,
        command_status: int,
        command_id: int | None = None,
        sequence: int | None = None,
    ) -> None:
        super().__init__(message, code=status_code(command_status), remote=self.caused_by_peer)
        self.command_status = command_status
        self.command_id = command_id
        self.sequence = sequence


class SmppDecodeError(SmppCodecError):
    """The peer sent octets that are not a valid PDU."""


class SmppFramingError(SmppDecodeError):
    """A command_length out of bounds: the stream is out of step, reset the link."""


class SmppEncodeError(SmppCodecError):
    """This side asked to encode a PDU the protocol cannot carry (a bug or bad input)."""

    caused_by_peer = False


class _Malformed(Exception):
    """Raised inside a field; `encode`/`decode` add the command and sequence."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _latin1(value: Value, status: int, what: str) -> bytes:
    if isinstance(value, str) and "\0" not in value:
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            pass
    raise _Malformed(status, f"{what}: expected Latin-1 text without NUL")


@dataclass(frozen=True, slots=True)
class CString:
    name: str
    max_size: int
    status: int = Status.ESME_RINVCMDLEN
    default: ClassVar[Value] = ""

    def read(self, frame: bytes, pos: int) -> tuple[str, int]:
        nul = frame.find(0, pos, pos + self.max_size)
        if nul < 0:
            raise _Malformed(self.status, f"{self.name}: no NUL within {self.max_size} octets")
        return frame[pos:nul].decode("latin-1"), nul + 1

    def write(self, value: Value, out: bytearray) -> None:
        raw = _latin1(value, self.status, self.name)
        if len(raw) >= self.max_size:
            raise _Malformed(self.status, f"{self.name}: longer than {self.max_size - 1}")
        out += raw
        out.append(0)


@dataclass(frozen=True, slots=True)
class Integer:
    name: str
    size: Literal[1, 2, 4] = 1
    status: int = Status.ESME_RINVCMDLEN
    default: ClassVar[Value] = 0

    def read(self, frame: bytes, pos: int) -> tuple[int, int]:
        end = pos + self.size
        if end > len(frame):
            raise _Malformed(self.status, f"{self.name}: body ends inside the field")
        return int.from_bytes(frame[pos:end], "big"), end

    def write(self, value: Value, out: bytearray) -> None:
        if not isinstance(value, int) or not 0 <= value < 1 << (8 * self.size):
            raise _Malformed(self.status, f"{self.name}: expected an int of {self.size} octets")
        out += value.to_bytes(self.size, "big")


@dataclass(frozen=True, slots=True)
class OctetString:
    """Octets counted by the one-octet field `length_field` just before them."""

    name: str
    length_field: str
    max_size: int
    status: int = Status.ESME_RINVCMDLEN
    default: ClassVar[Value] = b""

    def read(self, frame: bytes, pos: int) -> tuple[bytes, int]:
        count = frame[pos] if pos < len(frame) else -1
        end = pos + 1 + count
        if not 0 <= count <= self.max_size or end > len(frame):
            raise _Malformed(self.status, f"{self.length_field} missing or does not fit")
        return frame[pos + 1 : end], end

    def write(self, value: Value, out: bytearray) -> None:
        if not isinstance(value, bytes) or len(value) > self.max_size:
            raise _Malformed(self.status, f"{self.name}: expected up to {self.max_size} bytes")
        out.append(len(value))
        out += value


Field = CString | Integer | OctetString


def _steps(fields: tuple[Field, ...]) -> tuple[Step, ...]:
    """The fields as `quick` steps: runs of one-octet Integers joined."""
    steps: list[Step] = []
    for f in fields:
        if isinstance(f, Integer) and f.size == 1:
            if steps and steps[-1][0] == INTS:
                steps[-1] = (INTS, (*steps[-1][1], f.name), 1)
            else:
                steps.append((INTS, (f.name,), 1))
        elif isinstance(f, Integer):
            steps.append((WIDE, (f.name,), f.size))
        elif isinstance(f, CString):
            steps.append((CSTRING, (f.name,), f.max_size))
        else:
            steps.append((OCTETS, (f.name,), f.max_size))
    return tuple(steps)


@dataclass(frozen=True, slots=True)
class PduSpec:
    command: Command
    fields: tuple[Field, ...] = ()
    takes_tlvs: bool = False
    names: frozenset[str] = field(init=False)
    steps: tuple[Step, ...] = field(init=False, repr=False)
    # The mandatory fields' quick encoder: a submit_sm's written out, else the walk.
    quick: Callable[[Mapping[str, Value]], bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset(f.name for f in self.fields))
        steps = _steps(self.fields)
        object.__setattr__(self, "steps", steps)
        quick = quick_submit_sm if steps == SUBMIT_SM_STEPS else partial(quick_body, steps)
        object.__setattr__(self, "quick", quick)

    @property
    def name(self) -> str:
        return self.command.name.lower()


@dataclass(frozen=True, slots=True)
class TlvSpec:
    """A known TLV: `kind` says how its value decodes; sizes count octets on the wire."""

    tag: Tag
    kind: Literal["int", "cstring", "octets"]
    min_size: int
    max_size: int

    def unpack(self, raw: bytes) -> Value:
        if not self.min_size <= len(raw) <= self.max_size:
            raise _Malformed(Status.ESME_RINVPARLEN, f"TLV 0x{self.tag:04x}: bad length")
        if self.kind == "int":
            return int.from_bytes(raw, "big")
        if self.kind == "octets":
            return raw
        # Some SMSCs leave the NUL off receipted_message_id; accept the value either way.
        text = raw[:-1] if raw.endswith(b"\0") else raw
        if 0 in text:
            raise _Malformed(Status.ESME_RINVOPTPARAMVAL, f"TLV 0x{self.tag:04x}: inner NUL")
        return text.decode("latin-1")

    def pack(self, value: Value) -> bytes:
        label = f"TLV 0x{self.tag:04x}"
        if self.kind == "cstring":
            raw = _latin1(value, Status.ESME_RINVOPTPARAMVAL, label) + b"\0"
        elif self.kind == "octets" and isinstance(value, bytes):
            raw = value
        elif self.kind == "int" and isinstance(value, int) and 0 <= value < 1 << 8 * self.max_size:
            raw = value.to_bytes(self.max_size, "big")
        else:
            raise _Malformed(Status.ESME_RINVOPTPARAMVAL, f"{label}: not a valid {self.kind}")
        if not self.min_size <= len(raw) <= self.max_size:
            raise _Malformed(Status.ESME_RINVPARLEN, f"{label}: bad length")
        return raw


def _int_tlv(tag: Tag, size: int = 1) -> TlvSpec:
    return TlvSpec(tag, "int", size, size)


_ONE_OCTET_TLVS = (
    Tag.DEST_ADDR_SUBUNIT, Tag.DEST_NETWORK_TYPE, Tag.DEST_BEARER_TYPE,
    Tag.SOURCE_ADDR_SUBUNIT, Tag.SOURCE_NETWORK_TYPE, Tag.SOURCE_BEARER_TYPE,
    Tag.PAYLOAD_TYPE, Tag.MS_MSG_WAIT_FACILITIES, Tag.PRIVACY_INDICATOR,
    Tag.USER_RESPONSE_CODE, Tag.LANGUAGE_INDICATOR, Tag.SAR_TOTAL_SEGMENTS,
    Tag.SAR_SEGMENT_SEQNUM, Tag.SC_INTERFACE_VERSION, Tag.CALLBACK_NUM_PRES_IND,
    Tag.NUMBER_OF_MESSAGES, Tag.DPF_RESULT, Tag.SET_DPF, Tag.MS_AVAILABILITY_STATUS,
    Tag.DELIVERY_FAILURE_REASON, Tag.MORE_MESSAGES_TO_SEND, Tag.MESSAGE_STATE,
)  # fmt: skip

TLV_SPECS: Mapping[int, TlvSpec] = {
    spec.tag: spec
    for spec in (
        *(_int_tlv(tag) for tag in _ONE_OCTET_TLVS),
        _int_tlv(Tag.USER_MESSAGE_REFERENCE, 2),
        _int_tlv(Tag.SOURCE_PORT, 2),
        _int_tlv(Tag.DESTINATION_PORT, 2),
        _int_tlv(Tag.SAR_MSG_REF_NUM, 2),
        _int_tlv(Tag.QOS_TIME_TO_LIVE, 4),
        TlvSpec(Tag.ADDITIONAL_STATUS_INFO_TEXT, "cstring", 1, 256),
        TlvSpec(Tag.RECEIPTED_MESSAGE_ID, "cstring", 1, 65),
        TlvSpec(Tag.NETWORK_ERROR_CODE, "octets", 3, 3),
        TlvSpec(Tag.MESSAGE_PAYLOAD, "octets", 0, 0xFFFF),
    )
}

_BIND_FIELDS = (
    CString("system_id", 16, Status.ESME_RINVSYSID),
    CString("password", 9, Status.ESME_RINVPASWD),
    CString("system_type", 13, Status.ESME_RINVSYSTYP),
    Integer("interface_version", status=Status.ESME_RBINDFAIL),
    Integer("addr_ton", status=Status.ESME_RBINDFAIL),
    Integer("addr_npi", status=Status.ESME_RBINDFAIL),
    CString("address_range", 41, Status.ESME_RBINDFAIL),
)
_SM_FIELDS = (
    CString("service_type", 6, Status.ESME_RINVSERTYP),
    Integer("source_addr_ton", status=Status.ESME_RINVSRCTON),
    Integer("source_addr_npi", status=Status.ESME_RINVSRCNPI),
    CString("source_addr", 21, Status.ESME_RINVSRCADR),
    Integer("dest_addr_ton", status=Status.ESME_RINVDSTTON),
    Integer("dest_addr_npi", status=Status.ESME_RINVDSTNPI),
    CString("destination_addr", 21, Status.ESME_RINVDSTADR),
    Integer("esm_class", status=Status.ESME_RINVESMCLASS),
    Integer("protocol_id"),
    Integer("priority_flag", status=Status.ESME_RINVPRTFLG),
    CString("schedule_delivery_time", 17, Status.ESME_RINVSCHED),
    CString("validity_period", 17, Status.ESME_RINVEXPIRY),
    Integer("registered_delivery", status=Status.ESME_RINVREGDLVFLG),
    Integer("replace_if_present_flag", status=Status.ESME_RINVREPFLAG),
    Integer("data_coding"),
    Integer("sm_default_msg_id", status=Status.ESME_RINVDFTMSGID),
    OctetString("short_message", "sm_length", 254, Status.ESME_RINVMSGLEN),
)
_DATA_SM_FIELDS = (
    CString("service_type", 6, Status.ESME_RINVSERTYP),
    Integer("source_addr_ton", status=Status.ESME_RINVSRCTON),
    Integer("source_addr_npi", status=Status.ESME_RINVSRCNPI),
    CString("source_addr", 65, Status.ESME_RINVSRCADR),
    Integer("dest_addr_ton", status=Status.ESME_RINVDSTTON),
    Integer("dest_addr_npi", status=Status.ESME_RINVDSTNPI),
    CString("destination_addr", 65, Status.ESME_RINVDSTADR),
    Integer("esm_class", status=Status.ESME_RINVESMCLASS),
    Integer("registered_delivery", status=Status.ESME_RINVREGDLVFLG),
    Integer("data_coding"),
)
_MESSAGE_ID = CString("message_id", 65, Status.ESME_RINVMSGID)
_QUERY_SM_RESP_FIELDS = (
    _MESSAGE_ID,
    CString("final_date", 17),
    Integer("message_state"),
    Integer("error_code"),
)
_ALERT_FIELDS = (
    *_DATA_SM_FIELDS[1:4],
    Integer("esme_addr_ton", status=Status.ESME_RINVDSTTON),
    Integer("esme_addr_npi", status=Status.ESME_RINVDSTNPI),
    CString("esme_addr", 65, Status.ESME_RINVDSTADR),
)
_BIND_RESP_FIELDS = (CString("system_id", 16, Status.ESME_RINVSYSID),)

# submit_sm_resp and deliver_sm_resp take no TLVs in 3.4, but SMPP 5.0 adds some and
# SMSCs that speak both send them; refusing them would lose the message_id.
SPECS: Mapping[int, PduSpec] = {
    spec.command: spec
    for spec in (
        PduSpec(Command.GENERIC_NACK),
        PduSpec(Command.BIND_RECEIVER, _BIND_FIELDS),
        PduSpec(Command.BIND_RECEIVER_RESP, _BIND_RESP_FIELDS, takes_tlvs=True),
        PduSpec(Command.BIND_TRANSMITTER, _BIND_FIELDS),
        PduSpec(Command.BIND_TRANSMITTER_RESP, _BIND_RESP_FIELDS, takes_tlvs=True),
        PduSpec(Command.BIND_TRANSCEIVER, _BIND_FIELDS),
        PduSpec(Command.BIND_TRANSCEIVER_RESP, _BIND_RESP_FIELDS, takes_tlvs=True),
        PduSpec(Command.OUTBIND, _BIND_FIELDS[:2]),
        PduSpec(Command.UNBIND),
        PduSpec(Command.UNBIND_RESP),
        PduSpec(Command.SUBMIT_SM, _SM_FIELDS, takes_tlvs=True),
        PduSpec(Command.SUBMIT_SM_RESP, (_MESSAGE_ID,), takes_tlvs=True),
        PduSpec(Command.DELIVER_SM, _SM_FIELDS, takes_tlvs=True),
        PduSpec(Command.DELIVER_SM_RESP, (_MESSAGE_ID,), takes_tlvs=True),
        PduSpec(Command.DATA_SM, _DATA_SM_FIELDS, takes_tlvs=True),
        PduSpec(Command.DATA_SM_RESP, (_MESSAGE_ID,), takes_tlvs=True),
        PduSpec(Command.QUERY_SM, (_MESSAGE_ID, *_SM_FIELDS[1:4])),
        PduSpec(Command.QUERY_SM_RESP, _QUERY_SM_RESP_FIELDS),
        PduSpec(Command.ENQUIRE_LINK),
        PduSpec(Command.ENQUIRE_LINK_RESP),
        PduSpec(Command.ALERT_NOTIFICATION, _ALERT_FIELDS, takes_tlvs=True),
    )
}


@dataclass(frozen=True, slots=True, repr=False)
class Pdu:
    """One PDU. `params` holds the mandatory fields by name (missing ones encode as
    0, "" or b""); `tlvs` the optional parameters by tag (a `Tag` or any int)."""

    command: Command
    sequence: int
    status: int = Status.ESME_ROK
    params: Mapping[str, Value] = field(default_factory=dict)
    tlvs: Mapping[int, Value] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Names and tags only: values hold addresses and message bodies.
        tags = ", ".join(f"0x{tag:04x}" for tag in self.tlvs)
        return (
            f"Pdu({self.command.name.lower()}, sequence={self.sequence}, "
            f"status=0x{self.status:08x}, {len(self.params)} params, tlvs=[{tags}])"
        )

    def param(self, name: str, kind: type[V]) -> V:
        """The mandatory field `name`; KeyError if absent, TypeError if not a `kind`."""
        value = self.params[name]
        if not isinstance(value, kind):
            raise TypeError(f"{name} is not {kind.__name__}")
        return value

    def tlv(self, tag: int, kind: type[V]) -> V | None:
        """The TLV `tag`, or None; TypeError if it is not a `kind`."""
        value = self.tlvs.get(tag)
        if value is None:
            return None
        if not isinstance(value, kind):
            raise TypeError(f"TLV 0x{tag:04x} is not {kind.__name__}")
        return value

    def response(
        self,
        status: int = Status.ESME_ROK,
        params: Mapping[str, Value] | None = None,
        tlvs: Mapping[int, Value] | None = None,
    ) -> Pdu:
        """The answer to this request, with the same sequence number."""
        return Pdu(self.command.response, self.sequence, status, params or {}, tlvs or {})


def encode(pdu: Pdu) -> bytes:
    """The wire form of `pdu`; SmppEncodeError if a value does not fit its field."""
    spec = SPECS.get(pdu.command)
    try:
        if spec is None:
            raise _Malformed(Status.ESME_RINVCMDID, "unsupported command")
        body = bytearray()
        if pdu.params or pdu.tlvs or pdu.status == Status.ESME_ROK or not pdu.command.is_response:
            _encode_body(spec, pdu.params, pdu.tlvs, body)
        return _HEADER.pack(HEADER_SIZE + len(body), pdu.command, pdu.status, pdu.sequence) + body
    except _Malformed as error:
        status, detail = error.status, error.detail
    except struct.error:
        status, detail = Status.ESME_RSYSERR, "status or sequence is not a 32-bit unsigned int"
    raise SmppEncodeError(
        f"{pdu.command.name.lower()}: {detail}", command_status=status, command_id=pdu.command
    )


def _encode_body(
    spec: PduSpec, params: Mapping[str, Value], tlvs: Mapping[int, Value], out: bytearray
) -> None:
    try:
        if not spec.names.issuperset(params):
            raise LookupError("a field not in the spec")
        out += spec.quick(params)
    except Exception:  # a value that does not fit: the checked way names the field
        for spec_field in spec.fields:
            spec_field.write(params.get(spec_field.name, spec_field.default), out)
        if not spec.names.issuperset(params):
            unknown = sorted(set(params) - spec.names)
            raise _Malformed(Status.ESME_RSYSERR, f"no such field(s) {unknown}") from None
    if not tlvs:
        return
    if not spec.takes_tlvs:
        raise _Malformed(Status.ESME_ROPTPARNOTALLWD, "takes no TLVs")
    for tag, value in tlvs.items():
        if not isinstance(tag, int) or not 0 <= tag <= 0xFFFF:
            raise _Malformed(Status.ESME_RINVOPTPARSTREAM, "TLV tag is not a 16-bit int")
        tlv_spec = TLV_SPECS.get(tag)
        if tlv_spec is not None:
            raw = tlv_spec.pack(value)
        elif isinstance(value, bytes) and len(value) <= 0xFFFF:
            raw = value
        else:
            raise _Malformed(Status.ESME_RINVPARLEN, f"TLV 0x{tag:04x} needs bytes up to 65535")
        out += _TLV_HEADER.pack(tag, len(raw))
        out += raw


def decode(frame: bytes) -> Pdu:
    """The PDU in `frame` (one whole PDU, header included); SmppDecodeError if invalid."""
    if not isinstance(frame, bytes):
        frame = bytes(frame)
    if len(frame) < HEADER_SIZE:
        raise SmppDecodeError("frame shorter than a header", command_status=Status.ESME_RINVCMDLEN)
    length, command_id, status, sequence = _HEADER.unpack_from(frame)
    spec = SPECS.get(command_id)
    try:
        if length != len(frame):
            raise _Malformed(Status.ESME_RINVCMDLEN, f"command_length {length} != {len(frame)}")
        if spec is None:
            raise _Malformed(Status.ESME_RINVCMDID, "unknown command_id")
        if length == HEADER_SIZE and status != Status.ESME_ROK and spec.command.is_response:
            return Pdu(spec.command, sequence, status)
        params, tlvs = _decode_body(spec, frame)
        return Pdu(spec.command, sequence, status, params, tlvs)
    except _Malformed as error:
        name = spec.name if spec else f"0x{command_id:08x}"
        raise SmppDecodeError(
            f"{name}: {error.detail}",
            command_status=error.status,
            command_id=command_id,
            sequence=sequence,
        ) from None


def _decode_body(spec: PduSpec, frame: bytes) -> tuple[dict[str, Value], dict[int, Value]]:
    found = quick_fields(spec.steps, frame, HEADER_SIZE)
    if found is None:  # a field does not decode: the checked way says which and why
        params: dict[str, Value] = {}
        pos = HEADER_SIZE
        for spec_field in spec.fields:
            params[spec_field.name], pos = spec_field.read(frame, pos)
    else:
        params, pos = found
    tlvs: dict[int, Value] = {}
    end = len(frame)
    if pos == end:
        return params, tlvs
    if not spec.takes_tlvs:
        raise _Malformed(Status.ESME_RINVCMDLEN, f"{end - pos} octets after the last field")
    while pos < end:
        if pos + 4 > end:
            raise _Malformed(Status.ESME_RINVOPTPARSTREAM, "TLV header cut short")
        tag, size = _TLV_HEADER.unpack_from(frame, pos)
        pos += 4
        if pos + size > end:
            raise _Malformed(Status.ESME_RINVOPTPARSTREAM, f"TLV 0x{tag:04x} runs past the end")
        if tag in tlvs:
            raise _Malformed(Status.ESME_RINVOPTPARSTREAM, f"TLV 0x{tag:04x} repeated")
        raw = frame[pos : pos + size]
        pos += size
        tlv_spec = TLV_SPECS.get(tag)
        if tlv_spec is None:
            tlvs[tag] = raw
        else:
            tlvs[tlv_spec.tag] = tlv_spec.unpack(raw)
    return params, tlvs


class PduReader:
    """Splits a TCP byte stream into frames by command_length.

    `feed` takes whatever the socket read; `next_frame` / `next_pdu` return one whole
    frame or PDU, or None until more data arrives. The first four octets of each frame
    are checked as soon as they are buffered: a command_length below 16 or above
    `max_pdu_size` raises `SmppFramingError` at once, from `feed` or from the call that
    reaches that frame, and from every call after it.
    """

    def __init__(self, max_pdu_size: int = MAX_PDU_SIZE) -> None:
        if max_pdu_size < HEADER_SIZE:
            raise ValueError(f"max_pdu_size must be at least {HEADER_SIZE}")
        self.max_pdu_size = max_pdu_size
        self._buffer = bytearray()
        self._start = 0
        self._failure: SmppFramingError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._start

    def feed(self, data: bytes) -> None:
        if self._failure is not None:
            raise self._failure.with_traceback(None)
        if self._start:
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data
        self._head_length()

    def next_frame(self) -> bytes | None:
        if self._failure is not None:
            raise self._failure.with_traceback(None)
        length = self._head_length()
        if length is None or self.buffered < length:
            return None
        start = self._start
        frame = bytes(self._buffer[start : start + length])
        self._start = start + length
        if self._start == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        return frame

    def next_pdu(self) -> Pdu | None:
        """The next PDU; SmppDecodeError for a bad frame, which is then behind us."""
        frame = self.next_frame()
        return None if frame is None else decode(frame)

    def _head_length(self) -> int | None:
        if self.buffered < 4:
            return None
        start = self._start
        length = int.from_bytes(self._buffer[start : start + 4], "big")
        if HEADER_SIZE <= length <= self.max_pdu_size:
            return length
        command_id = sequence = None
        if self.buffered >= HEADER_SIZE:
            _, command_id, _, sequence = _HEADER.unpack_from(self._buffer, start)
        self._failure = SmppFramingError(
            f"command_length {length} outside {HEADER_SIZE}..{self.max_pdu_size}",
            command_status=Status.ESME_RINVCMDLEN,
            command_id=command_id,
            sequence=sequence,
        )
        raise self._failure
