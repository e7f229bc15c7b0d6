"""SMS TPDUs as modems speak them in PDU mode: 3GPP TS 23.040 over TS 23.038 alphabets.

Theory of operation. In PDU mode (`AT+CMGF=0`) a modem takes and gives hex: an SMSC
address field (one length octet, "00" = use the SIM's SMSC) and then a TPDU. We build
SMS-SUBMIT to send, and read SMS-DELIVER (inbound) and SMS-STATUS-REPORT (receipts);
the emulator does the reverse with the same functions, so both sides share one codec.

A TPDU opens with a first octet whose two low bits are the message type (TP-MTI) and
whose other bits are flags: TP-SRR/SRI (status report), TP-VPF (validity format),
TP-UDHI (the user data opens with a header). Addresses are a digit count, a
type-of-address octet (type of number in bits 6..4) and swapped BCD digits padded with
F; an alphanumeric address (TON 5) is instead GSM 7-bit packed text whose length counts
semi-octets. Timestamps are seven swapped BCD octets, the last being the time zone in
quarter hours with its sign in bit 3 of the first digit.

User data length (TP-UDL) counts septets for the GSM 7-bit alphabet and octets otherwise.
With a header (UDH), the septet count includes the header and the fill bits that bring
the text to a septet boundary. The only header element we act on is concatenation (8-bit
reference IEI 0x00, 16-bit IEI 0x08); others are skipped, and a concatenation element
that contradicts itself (part 0, or a part past the total) is ignored, as TS 23.040
9.2.3.24.1 asks.

An incoming TPDU is read by its own lengths and ends where TP-UDL says: octets after the
user data are ignored. Phones and modems hand out the whole SIM record (EF-SMS, 176
octets) padded with FF, and some carry other octets past TP-UDL (gammu's tests/at-sms/
32.dump and 39.dump are such records); refusing them would lose a patient's reply.
An SMS-SUBMIT (what our side wrote) is still read strictly.

Every decoding error is a `PduError` and every length is checked against the octets
that are there: the bytes come from a serial line and may be anything. No error message
holds a number or a text, which are patient data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from drivers.modem.tpdu_fields import (
    TON_ALPHANUMERIC,
    TON_INTERNATIONAL,
    TON_NATIONAL,
    Encoding,
    PduError,
    Reader,
    checked_octet,
    encode_address,
    encode_sender,
    encode_smsc,
    encode_timestamp,
    encoding_of,
    pdu_octets,
    read_address,
    read_smsc,
    read_timestamp,
    validity_code,
    validity_minutes_of,
)
from drivers.text import (
    decode_gsm7_septets,
    decode_ucs2,
    encode_gsm7_septets,
    encode_ucs2,
    pack_septets,
    unpack_septets,
)

__all__ = [
    "MTI_DELIVER",
    "MTI_STATUS_REPORT",
    "MTI_SUBMIT",
    "Concat",
    "EncodedPdu",
    "Encoding",
    "PduError",
    "SenderKind",
    "SmsDeliver",
    "SmsSubmit",
    "StatusReport",
    "decode_incoming",
    "decode_submit",
    "encode_deliver",
    "encode_status_report",
    "encode_submit",
    "message_type",
    "validity_code",
    "validity_minutes_of",
]

SenderKind = Literal["international", "national", "alphanumeric", "other"]
Outcome = Literal["delivered", "pending", "failed"]

MTI_DELIVER = 0x00
MTI_SUBMIT = 0x01
MTI_STATUS_REPORT = 0x02
MTI_MASK = 0x03
FO_REJECT_DUPLICATES = 0x04  # SUBMIT: TP-RD
FO_NO_MORE_MESSAGES = 0x04  # DELIVER, STATUS-REPORT: TP-MMS set = nothing more waiting
VPF_MASK = 0x18
VPF_NONE, VPF_ENHANCED, VPF_RELATIVE, VPF_ABSOLUTE = 0x00, 0x08, 0x10, 0x18
FO_STATUS_REPORT = 0x20  # SUBMIT: TP-SRR; DELIVER: TP-SRI; STATUS-REPORT: TP-SRQ
FO_UDHI = 0x40

DCS_GSM7, DCS_8BIT, DCS_UCS2 = 0x00, 0x04, 0x08
IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08

MAX_UD_OCTETS = 140
MAX_UD_SEPTETS = 160


@dataclass(frozen=True, slots=True)
class Concat:
    """Concatenation header: `seq` of `total` parts sharing `ref` (16 bits if `wide_ref`)."""

    ref: int
    total: int
    seq: int
    wide_ref: bool = False


@dataclass(frozen=True, slots=True)
class EncodedPdu:
    """`hex` includes the SMSC field; `tpdu_length` is the <length> of `AT+CMGS`."""

    hex: str
    tpdu_length: int


@dataclass(frozen=True, slots=True)
class SmsSubmit:
    message_ref: int
    to: str
    text: str
    encoding: Encoding
    concat: Concat | None
    request_report: bool
    validity_minutes: int | None  # relative validity only; None if absent or absolute
    data: bytes = b""  # the user data (without header) for 8-bit messages


@dataclass(frozen=True, slots=True)
class SmsDeliver:
    sender: str
    sender_kind: SenderKind
    text: str
    encoding: Encoding
    timestamp: datetime  # the service centre's, with its time zone
    concat: Concat | None
    smsc: str | None
    data: bytes = b""  # the user data (without header) for 8-bit messages


@dataclass(frozen=True, slots=True)
class StatusReport:
    message_ref: int
    recipient: str
    submitted: datetime
    discharged: datetime
    status: int  # TP-ST

    @property
    def outcome(self) -> Outcome:
        """TS 23.040 9.2.3.15: 0x00-0x1F done, 0x20-0x3F still trying, above failed."""
        if self.status < 0x20:
            return "delivered"
        if self.status < 0x40:
            return "pending"
        return "failed"


# ---------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class _UserData:
    text: str
    concat: Concat | None
    data: bytes


def _parse_header(header: bytes) -> Concat | None:
    concat: Concat | None = None
    position = 0
    while position < len(header):
        if position + 2 > len(header):
            raise PduError("user data header ends inside an element")
        iei, size = header[position], header[position + 1]
        body = header[position + 2 : position + 2 + size]
        if len(body) != size:
            raise PduError("user data header element runs past the header")
        position += 2 + size
        if iei == IEI_CONCAT_8 and size == 3:
            candidate = Concat(body[0], body[1], body[2])
        elif iei == IEI_CONCAT_16 and size == 4:
            candidate = Concat((body[0] << 8) | body[1], body[2], body[3], wide_ref=True)
        else:
            continue  # an element we do not use
        if 1 <= candidate.seq <= candidate.total:
            concat = candidate
    return concat


def _read_user_data(reader: Reader, first_octet: int, encoding: Encoding) -> _UserData:
    length = reader.octet("the user data length")
    has_header = bool(first_octet & FO_UDHI)
    if encoding == "gsm7":
        if length > MAX_UD_SEPTETS:
            raise PduError("user data longer than 160 septets")
        packed = reader.take((7 * length + 7) // 8, "the user data")
        header_octets = 0
        concat = None
        if has_header:
            if not packed:
                raise PduError("header announced but the user data is empty")
            header_octets = packed[0] + 1
        header_septets = (8 * header_octets + 6) // 7
        if header_septets > length:
            raise PduError("user data header longer than the user data")
        if has_header:
            concat = _parse_header(packed[1:header_octets])
        fill_bits = 7 * header_septets - 8 * header_octets
        septets = unpack_septets(packed[header_octets:], length - header_septets, fill_bits)
        return _UserData(decode_gsm7_septets(septets), concat, b"")
    if length > MAX_UD_OCTETS:
        raise PduError("user data longer than 140 octets")
    payload = reader.take(length, "the user data")
    concat = None
    if has_header:
        if not payload or payload[0] + 1 > length:
            raise PduError("user data header longer than the user data")
        concat = _parse_header(payload[1 : payload[0] + 1])
        payload = payload[payload[0] + 1 :]
    if encoding == "ucs2":
        return _UserData(decode_ucs2(payload), concat, b"")
    return _UserData("", concat, payload)


def _tpdu_reader(pdu: str | bytes, has_smsc: bool) -> tuple[Reader, str | None, int]:
    reader = Reader(pdu_octets(pdu))
    smsc = read_smsc(reader) if has_smsc else None
    return reader, smsc, reader.octet("the first octet")


_SENDER_KINDS: dict[int, SenderKind] = {
    TON_INTERNATIONAL: "international",
    TON_NATIONAL: "national",
    TON_ALPHANUMERIC: "alphanumeric",
}


def decode_incoming(pdu: str | bytes, *, has_smsc: bool = True) -> SmsDeliver | StatusReport:
    """An SMS-DELIVER or SMS-STATUS-REPORT as `+CMT`, `+CMGR` or `+CDS` give it.

    `pdu` is hex text or the raw octets; `has_smsc` says it opens with the SMSC field.
    """
    reader, smsc, first = _tpdu_reader(pdu, has_smsc)
    kind = first & MTI_MASK
    if kind == MTI_DELIVER:
        sender, ton = read_address(reader)
        reader.octet("the protocol identifier")
        encoding = encoding_of(reader.octet("the data coding scheme"))
        timestamp = read_timestamp(reader, "the service centre time stamp")
        user_data = _read_user_data(reader, first, encoding)
        # Whatever follows TP-UD (FF fill, a record's leftovers) is not the message.
        return SmsDeliver(
            sender=sender,
            sender_kind=_SENDER_KINDS.get(ton, "other"),
            text=user_data.text,
            encoding=encoding,
            timestamp=timestamp,
            concat=user_data.concat,
            smsc=smsc,
            data=user_data.data,
        )
    if kind == MTI_STATUS_REPORT:
        message_ref = reader.octet("the message reference")
        recipient, _ = read_address(reader)
        submitted = read_timestamp(reader, "the service centre time stamp")
        discharged = read_timestamp(reader, "the discharge time")
        status = reader.octet("the status")
        # Optional TP-PI, PID, DCS and user data may follow; they carry nothing we use.
        return StatusReport(message_ref, recipient, submitted, discharged, status)
    raise PduError(f"message type {kind} is not an SMS-DELIVER or SMS-STATUS-REPORT")


def message_type(pdu: str | bytes, *, has_smsc: bool = True) -> int | None:
    """The TP-MTI of a stored record (0 DELIVER, 1 SUBMIT, 2 STATUS-REPORT, 3 reserved),
    or None when not even the first octet can be read."""
    try:
        return _tpdu_reader(pdu, has_smsc)[2] & MTI_MASK
    except PduError:
        return None


def decode_submit(pdu: str | bytes, *, has_smsc: bool = True) -> SmsSubmit:
    """An SMS-SUBMIT as a terminal gives it to `AT+CMGS` (the emulator's side)."""
    reader, _, first = _tpdu_reader(pdu, has_smsc)
    if first & MTI_MASK != MTI_SUBMIT:
        raise PduError(f"message type {first & MTI_MASK} is not an SMS-SUBMIT")
    message_ref = reader.octet("the message reference")
    to, _ = read_address(reader)
    reader.octet("the protocol identifier")
    encoding = encoding_of(reader.octet("the data coding scheme"))
    validity: int | None = None
    vpf = first & VPF_MASK
    if vpf == VPF_RELATIVE:
        validity = validity_minutes_of(reader.octet("the validity period"))
    elif vpf != VPF_NONE:
        reader.take(7, "the validity period")  # absolute or enhanced: not used here
    user_data = _read_user_data(reader, first, encoding)
    reader.expect_end()
    return SmsSubmit(
        message_ref=message_ref,
        to=to,
        text=user_data.text,
        encoding=encoding,
        concat=user_data.concat,
        request_report=bool(first & FO_STATUS_REPORT),
        validity_minutes=validity,
        data=user_data.data,
    )


# ---------------------------------------------------------------------- writing


def _concat_header(concat: Concat | None) -> bytes:
    if concat is None:
        return b""
    if not 1 <= concat.total <= 255 or not 1 <= concat.seq <= concat.total:
        raise PduError("concatenation needs 1 <= seq <= total <= 255")
    if concat.wide_ref:
        if not 0 <= concat.ref <= 0xFFFF:
            raise PduError("a 16-bit concatenation reference must be in 0..65535")
        element = bytes((IEI_CONCAT_16, 4, concat.ref >> 8, concat.ref & 0xFF))
    else:
        if not 0 <= concat.ref <= 0xFF:
            raise PduError("an 8-bit concatenation reference must be in 0..255")
        element = bytes((IEI_CONCAT_8, 3, concat.ref))
    element += bytes((concat.total, concat.seq))
    return bytes((len(element),)) + element


def _user_data(text: str, encoding: Encoding, concat: Concat | None, data: bytes) -> bytes:
    """TP-UDL and TP-UD, header included."""
    header = _concat_header(concat)
    if encoding == "gsm7":
        try:
            septets = encode_gsm7_septets(text)
        except ValueError:
            raise PduError("text has a character outside the GSM 7-bit alphabet") from None
        header_septets = (8 * len(header) + 6) // 7
        length = header_septets + len(septets)
        if length > MAX_UD_SEPTETS:
            raise PduError("text does not fit in one SMS part")
        fill_bits = 7 * header_septets - 8 * len(header)
        return bytes((length,)) + header + pack_septets(septets, fill_bits)
    payload = encode_ucs2(text) if encoding == "ucs2" else data
    if len(header) + len(payload) > MAX_UD_OCTETS:
        raise PduError("text does not fit in one SMS part")
    return bytes((len(header) + len(payload),)) + header + payload


_DCS: dict[str, int] = {"gsm7": DCS_GSM7, "8bit": DCS_8BIT, "ucs2": DCS_UCS2}


def _encoded(smsc: str | None, tpdu: bytes) -> EncodedPdu:
    return EncodedPdu((encode_smsc(smsc) + tpdu).hex().upper(), len(tpdu))


def encode_submit(
    *,
    to: str,
    text: str,
    encoding: Literal["gsm7", "ucs2"],
    message_ref: int = 0,
    concat: Concat | None = None,
    request_report: bool = False,
    validity_minutes: int | None = None,
) -> EncodedPdu:
    """One SMS-SUBMIT part for `AT+CMGS`, with "00" as SMSC (the SIM's).

    `text` must fit one part (160 septets or 140 octets, less the header). `to` is
    "+digits" (international) or digits (type unknown, as handsets send local numbers).
    """
    if encoding not in ("gsm7", "ucs2"):
        raise PduError("encoding must be gsm7 or ucs2")
    first = MTI_SUBMIT
    validity = b""
    if validity_minutes is not None:
        first |= VPF_RELATIVE
        validity = bytes((validity_code(validity_minutes),))
    if request_report:
        first |= FO_STATUS_REPORT
    if concat is not None:
        first |= FO_UDHI
    tpdu = (
        bytes((first, checked_octet(message_ref, "message_ref")))
        + encode_address(to)
        + bytes((0x00, _DCS[encoding]))
        + validity
        + _user_data(text, encoding, concat, b"")
    )
    return _encoded(None, tpdu)


def encode_deliver(
    *,
    sender: str,
    text: str,
    encoding: Encoding,
    timestamp: datetime,
    concat: Concat | None = None,
    smsc: str | None = None,
    data: bytes = b"",
) -> EncodedPdu:
    """An SMS-DELIVER as a modem reports it. `sender` "+digits" is international, bare
    digits national, anything else alphanumeric; for "8bit" the user data is `data`."""
    if encoding not in _DCS:
        raise PduError("encoding must be gsm7, 8bit or ucs2")
    first = MTI_DELIVER | FO_NO_MORE_MESSAGES | (FO_UDHI if concat else 0)
    tpdu = (
        bytes((first,))
        + encode_sender(sender)
        + bytes((0x00, _DCS[encoding]))
        + encode_timestamp(timestamp)
        + _user_data(text, encoding, concat, data)
    )
    return _encoded(smsc, tpdu)


def encode_status_report(
    *,
    message_ref: int,
    recipient: str,
    status: int,
    submitted: datetime,
    discharged: datetime,
    smsc: str | None = None,
) -> EncodedPdu:
    """An SMS-STATUS-REPORT for the SUBMIT with `message_ref` (TP-SRQ clear: a SUBMIT)."""
    tpdu = (
        bytes((MTI_STATUS_REPORT | FO_NO_MORE_MESSAGES, checked_octet(message_ref, "message_ref")))
        + encode_address(recipient)
        + encode_timestamp(submitted)
        + encode_timestamp(discharged)
        + bytes((checked_octet(status, "status"),))
    )
    return _encoded(smsc, tpdu)


def iter_submit_parts(
    *,
    to: str,
    parts: tuple[str, ...] | list[str],
    encoding: Literal["gsm7", "ucs2"],
    first_message_ref: int,
    concat_ref: int = 0,
    wide_ref: bool = False,
    request_report: bool = False,
    validity_minutes: int | None = None,
) -> Iterator[EncodedPdu]:
    """The SMS-SUBMITs of a split body (`drivers.text.split`), message refs counting up
    from `first_message_ref` modulo 256; a single part carries no concatenation header."""
    total = len(parts)
    for seq, part in enumerate(parts, start=1):
        yield encode_submit(
            to=to,
            text=part,
            encoding=encoding,
            message_ref=(first_message_ref + seq - 1) % 256,
            concat=Concat(concat_ref, total, seq, wide_ref) if total > 1 else None,
            request_report=request_report,
            validity_minutes=validity_minutes,
        )


def utc_timestamp(seconds: float) -> datetime:
    """A clock reading as an SMSC would stamp it (UTC, whole seconds)."""
    return datetime.fromtimestamp(int(seconds), UTC)
