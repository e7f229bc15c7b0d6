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

Every decoding error is a `PduError` and every length is checked against the octets
that are there: the bytes come from a serial line and may be anything. No error message
holds a number or a text, which are patient data.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

from drivers.text import (
    decode_gsm7_septets,
    decode_ucs2,
    encode_gsm7_septets,
    encode_ucs2,
    pack_septets,
    unpack_septets,
)

__all__ = [
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
    "validity_code",
    "validity_minutes_of",
]

Encoding = Literal["gsm7", "8bit", "ucs2"]
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

TON_INTERNATIONAL = 1
TON_NATIONAL = 2
TON_ALPHANUMERIC = 5
TOA_INTERNATIONAL = 0x91  # ISDN numbering plan, international number
TOA_UNKNOWN = 0x81  # ISDN numbering plan, type unknown: how modems send local numbers
TOA_NATIONAL = 0xA1
TOA_ALPHANUMERIC = 0xD0

DCS_GSM7, DCS_8BIT, DCS_UCS2 = 0x00, 0x04, 0x08
IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08

MAX_UD_OCTETS = 140
MAX_UD_SEPTETS = 160
MAX_ADDRESS_DIGITS = 20  # address field of at most 12 octets (TS 23.040 9.1.2.5)
MAX_ALPHANUMERIC_SEPTETS = 11  # 10 octets of packed septets
MAX_SMSC_OCTETS = 11  # type-of-address and 10 octets of digits (TS 24.011 8.2.5.1)

# Semi-octet digit values of TS 24.008 10.5.4.7 (called party BCD number); 0xF is filler.
_BCD_DIGITS = "0123456789*#abc"
_DIGIT_VALUES = {char: value for value, char in enumerate(_BCD_DIGITS)}


class PduError(ValueError):
    """A PDU that cannot be decoded, or arguments that cannot be encoded."""


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


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int, what: str) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            raise PduError(f"PDU ends inside {what}")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def octet(self, what: str) -> int:
        return self.take(1, what)[0]

    def rest(self) -> bytes:
        chunk = self.data[self.pos :]
        self.pos = len(self.data)
        return chunk

    def expect_end(self) -> None:
        if self.pos != len(self.data):
            raise PduError(f"{len(self.data) - self.pos} octets after the user data")


def _octets(pdu: str | bytes) -> bytes:
    if isinstance(pdu, bytes):
        return pdu
    try:
        return bytes.fromhex(pdu.strip())
    except ValueError:
        raise PduError("PDU is not a hex string") from None


def _decode_bcd(octets: bytes, digits: int) -> str:
    chars: list[str] = []
    for octet in octets:
        for nibble in (octet & 0x0F, octet >> 4):
            if len(chars) < digits and nibble != 0x0F:
                chars.append(_BCD_DIGITS[nibble])
    return "".join(chars)


def _read_address(reader: _Reader) -> tuple[str, int]:
    """An originating/destination address: (address, type of number)."""
    length = reader.octet("an address length")
    toa = reader.octet("a type of address")
    ton = (toa >> 4) & 0x07
    if ton == TON_ALPHANUMERIC:
        if length > MAX_ADDRESS_DIGITS:
            raise PduError("alphanumeric address longer than 10 octets")
        packed = reader.take((length + 1) // 2, "an alphanumeric address")
        septets = unpack_septets(packed, length * 4 // 7)
        return decode_gsm7_septets(septets), ton
    if length > MAX_ADDRESS_DIGITS:
        raise PduError("address longer than 20 digits")
    digits = _decode_bcd(reader.take((length + 1) // 2, "an address"), length)
    return ("+" + digits if ton == TON_INTERNATIONAL else digits), ton


def _read_smsc(reader: _Reader) -> str | None:
    length = reader.octet("the SMSC length")
    if length == 0:
        return None
    if length > MAX_SMSC_OCTETS:
        raise PduError("SMSC address longer than 11 octets")
    field = reader.take(length, "the SMSC address")
    digits = _decode_bcd(field[1:], 2 * (length - 1))
    return "+" + digits if (field[0] >> 4) & 0x07 == TON_INTERNATIONAL else digits


def _bcd_pair(octet: int, what: str) -> int:
    low, high = octet & 0x0F, octet >> 4
    if low > 9 or high > 9:
        raise PduError(f"{what} is not decimal")
    return low * 10 + high


def _read_timestamp(reader: _Reader, what: str) -> datetime:
    raw = reader.take(7, what)
    year, month, day, hour, minute, second = (_bcd_pair(octet, what) for octet in raw[:6])
    zone = raw[6]
    if zone >> 4 > 9:
        raise PduError(f"{what} has a time zone that is not decimal")
    quarters = (zone & 0x07) * 10 + (zone >> 4)
    offset = timedelta(minutes=15 * quarters) * (-1 if zone & 0x08 else 1)
    century = 1900 if year >= 90 else 2000  # semi-octet years have no century
    try:
        return datetime(century + year, month, day, hour, minute, second, tzinfo=timezone(offset))
    except ValueError:
        raise PduError(f"{what} is not a valid date and time") from None


def validity_minutes_of(code: int) -> int:
    """Minutes of a relative TP-VP octet (TS 23.040 9.2.3.12.1)."""
    if code <= 143:
        return (code + 1) * 5
    if code <= 167:
        return 12 * 60 + (code - 143) * 30
    if code <= 196:
        return (code - 166) * 24 * 60
    return (code - 192) * 7 * 24 * 60


def validity_code(minutes: int) -> int:
    """The smallest relative TP-VP that lasts at least `minutes` (at most 63 weeks)."""
    if minutes <= 0:
        raise PduError("validity must be a positive number of minutes")
    if minutes <= 720:
        return (minutes + 4) // 5 - 1
    if minutes <= 1440:
        return 143 + (minutes - 720 + 29) // 30
    if minutes <= 30 * 1440:
        return 166 + (minutes + 1439) // 1440
    return min(255, 192 + (minutes + 7 * 1440 - 1) // (7 * 1440))


_GENERAL_ALPHABETS: tuple[Encoding, ...] = ("gsm7", "8bit", "ucs2", "gsm7")  # 11: reserved


def _encoding_of(dcs: int) -> Encoding:
    """The alphabet of a TP-DCS (TS 23.038 4); reserved values read as the default."""
    group = dcs >> 4
    if group <= 0x7:  # general data coding, possibly marked for automatic deletion
        if dcs & 0x20:
            return "8bit"  # compressed: we cannot decompress, so the octets are data
        return _GENERAL_ALPHABETS[(dcs >> 2) & 0x03]
    if group == 0xE:
        return "ucs2"  # message waiting indication, store, UCS-2
    if group == 0xF:
        return "8bit" if dcs & 0x04 else "gsm7"
    return "gsm7"


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


def _read_user_data(reader: _Reader, first_octet: int, encoding: Encoding) -> _UserData:
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


def _tpdu_reader(pdu: str | bytes, has_smsc: bool) -> tuple[_Reader, str | None, int]:
    reader = _Reader(_octets(pdu))
    smsc = _read_smsc(reader) if has_smsc else None
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
        sender, ton = _read_address(reader)
        reader.octet("the protocol identifier")
        encoding = _encoding_of(reader.octet("the data coding scheme"))
        timestamp = _read_timestamp(reader, "the service centre time stamp")
        user_data = _read_user_data(reader, first, encoding)
        reader.expect_end()
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
        recipient, _ = _read_address(reader)
        submitted = _read_timestamp(reader, "the service centre time stamp")
        discharged = _read_timestamp(reader, "the discharge time")
        status = reader.octet("the status")
        # Optional TP-PI, PID, DCS and user data may follow; they carry nothing we use.
        return StatusReport(message_ref, recipient, submitted, discharged, status)
    raise PduError(f"message type {kind} is not an SMS-DELIVER or SMS-STATUS-REPORT")


def decode_submit(pdu: str | bytes, *, has_smsc: bool = True) -> SmsSubmit:
    """An SMS-SUBMIT as a terminal gives it to `AT+CMGS` (the emulator's side)."""
    reader, _, first = _tpdu_reader(pdu, has_smsc)
    if first & MTI_MASK != MTI_SUBMIT:
        raise PduError(f"message type {first & MTI_MASK} is not an SMS-SUBMIT")
    message_ref = reader.octet("the message reference")
    to, _ = _read_address(reader)
    reader.octet("the protocol identifier")
    encoding = _encoding_of(reader.octet("the data coding scheme"))
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


def _encode_bcd(digits: str) -> bytes:
    values = []
    for char in digits:
        value = _DIGIT_VALUES.get(char)
        if value is None:
            raise PduError("address has a character that is not a digit, '*' or '#'")
        values.append(value)
    if len(values) % 2:
        values.append(0x0F)
    return bytes(values[i] | (values[i + 1] << 4) for i in range(0, len(values), 2))


def _number_parts(number: str, plain_toa: int) -> tuple[int, str]:
    if number.startswith("+"):
        return TOA_INTERNATIONAL, number[1:]
    return plain_toa, number


def _address(number: str, plain_toa: int = TOA_UNKNOWN) -> bytes:
    """A phone number: "+digits" is international, bare digits get `plain_toa`."""
    toa, digits = _number_parts(number, plain_toa)
    if not digits or len(digits) > MAX_ADDRESS_DIGITS:
        raise PduError("address must have 1 to 20 digits")
    return bytes((len(digits), toa)) + _encode_bcd(digits)


def _alphanumeric_address(name: str) -> bytes:
    try:
        septets = encode_gsm7_septets(name)
    except ValueError:
        raise PduError("alphanumeric address is not in the GSM 7-bit alphabet") from None
    if not septets or len(septets) > MAX_ALPHANUMERIC_SEPTETS:
        raise PduError("alphanumeric address must have 1 to 11 septets")
    packed = pack_septets(septets)
    return bytes(((7 * len(septets) + 3) // 4, TOA_ALPHANUMERIC)) + packed


def _sender_address(sender: str) -> bytes:
    if sender.startswith("+") and sender[1:].isdigit():
        return _address(sender)
    if sender.isdigit() and sender.isascii():
        return _address(sender, TOA_NATIONAL)
    return _alphanumeric_address(sender)


def _smsc_field(smsc: str | None) -> bytes:
    if not smsc:
        return b"\x00"
    toa, digits = _number_parts(smsc, TOA_UNKNOWN)
    if not digits or len(digits) > 2 * (MAX_SMSC_OCTETS - 1):
        raise PduError("SMSC address must have 1 to 20 digits")
    body = bytes((toa,)) + _encode_bcd(digits)
    return bytes((len(body),)) + body


def _timestamp(moment: datetime) -> bytes:
    offset = moment.utcoffset()
    if offset is None:
        raise PduError("timestamp needs a time zone")
    quarters, remainder = divmod(int(offset.total_seconds()), 15 * 60)
    if remainder or not -79 <= quarters <= 79:
        raise PduError("time zone must be whole quarter hours within 19:45 of UTC")
    if not 1990 <= moment.year <= 2089:
        raise PduError("timestamp year must be between 1990 and 2089")
    fields = (moment.year % 100, moment.month, moment.day, moment.hour, moment.minute)
    octets = [(value % 10) << 4 | value // 10 for value in (*fields, moment.second)]
    size = abs(quarters)
    octets.append((size % 10) << 4 | size // 10 | (0x08 if quarters < 0 else 0))
    return bytes(octets)


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
    return EncodedPdu((_smsc_field(smsc) + tpdu).hex().upper(), len(tpdu))


def _byte(value: int, what: str) -> int:
    if not 0 <= value <= 0xFF:
        raise PduError(f"{what} must be in 0..255")
    return value


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
        bytes((first, _byte(message_ref, "message_ref")))
        + _address(to)
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
        + _sender_address(sender)
        + bytes((0x00, _DCS[encoding]))
        + _timestamp(timestamp)
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
        bytes((MTI_STATUS_REPORT | FO_NO_MORE_MESSAGES, _byte(message_ref, "message_ref")))
        + _address(recipient)
        + _timestamp(submitted)
        + _timestamp(discharged)
        + bytes((_byte(status, "status"),))
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
