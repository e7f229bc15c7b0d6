"""Fields of SMS TPDUs (3GPP TS 23.040 9.1.2, 9.2.3): addresses, semi-octet numbers and
timestamps, relative validity, data coding, and a bounds-checked reader. `pdu` builds
whole TPDUs from these. Every decoding problem is a `PduError` that names the field,
never its value.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

from drivers.text import decode_gsm7_septets, encode_gsm7_septets, pack_septets, unpack_septets

Encoding = Literal["gsm7", "8bit", "ucs2"]

TON_INTERNATIONAL = 1
TON_NATIONAL = 2
TON_ALPHANUMERIC = 5
TOA_INTERNATIONAL = 0x91  # ISDN numbering plan, international number
TOA_UNKNOWN = 0x81  # ISDN numbering plan, type unknown: how modems send local numbers
TOA_NATIONAL = 0xA1
TOA_ALPHANUMERIC = 0xD0

MAX_ADDRESS_DIGITS = 20  # address field of at most 12 octets (TS 23.040 9.1.2.5)
MAX_ALPHANUMERIC_SEPTETS = 11  # 10 octets of packed septets
MAX_SMSC_OCTETS = 11  # type-of-address and 10 octets of digits (TS 24.011 8.2.5.1)

# Semi-octet digit values of TS 24.008 10.5.4.7 (called party BCD number); 0xF is filler.
BCD_DIGITS = "0123456789*#abc"
DIGIT_VALUES = {char: value for value, char in enumerate(BCD_DIGITS)}


class PduError(ValueError):
    """A PDU that cannot be decoded, or arguments that cannot be encoded."""


class Reader:
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

    def expect_end(self) -> None:
        if self.pos != len(self.data):
            raise PduError(f"{len(self.data) - self.pos} octets after the user data")


def pdu_octets(pdu: str | bytes) -> bytes:
    if isinstance(pdu, bytes):
        return pdu
    try:
        return bytes.fromhex(pdu.strip())
    except ValueError:
        raise PduError("PDU is not a hex string") from None


def decode_bcd(octets: bytes, digits: int) -> str:
    chars: list[str] = []
    for octet in octets:
        for nibble in (octet & 0x0F, octet >> 4):
            if len(chars) < digits and nibble != 0x0F:
                chars.append(BCD_DIGITS[nibble])
    return "".join(chars)


def read_address(reader: Reader) -> tuple[str, int]:
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
    digits = decode_bcd(reader.take((length + 1) // 2, "an address"), length)
    return ("+" + digits if ton == TON_INTERNATIONAL else digits), ton


def read_smsc(reader: Reader) -> str | None:
    length = reader.octet("the SMSC length")
    if length == 0:
        return None
    if length > MAX_SMSC_OCTETS:
        raise PduError("SMSC address longer than 11 octets")
    field = reader.take(length, "the SMSC address")
    digits = decode_bcd(field[1:], 2 * (length - 1))
    return "+" + digits if (field[0] >> 4) & 0x07 == TON_INTERNATIONAL else digits


def bcd_pair(octet: int, what: str) -> int:
    low, high = octet & 0x0F, octet >> 4
    if low > 9 or high > 9:
        raise PduError(f"{what} is not decimal")
    return low * 10 + high


def read_timestamp(reader: Reader, what: str) -> datetime:
    raw = reader.take(7, what)
    year, month, day, hour, minute, second = (bcd_pair(octet, what) for octet in raw[:6])
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


GENERAL_ALPHABETS: tuple[Encoding, ...] = ("gsm7", "8bit", "ucs2", "gsm7")  # 11: reserved


def encoding_of(dcs: int) -> Encoding:
    """The alphabet of a TP-DCS (TS 23.038 4); reserved values read as the default."""
    group = dcs >> 4
    if group <= 0x7:  # general data coding, possibly marked for automatic deletion
        if dcs & 0x20:
            return "8bit"  # compressed: we cannot decompress, so the octets are data
        return GENERAL_ALPHABETS[(dcs >> 2) & 0x03]
    if group == 0xE:
        return "ucs2"  # message waiting indication, store, UCS-2
    if group == 0xF:
        return "8bit" if dcs & 0x04 else "gsm7"
    return "gsm7"


def encode_bcd(digits: str) -> bytes:
    values = []
    for char in digits:
        value = DIGIT_VALUES.get(char)
        if value is None:
            raise PduError("address has a character that is not a digit, '*' or '#'")
        values.append(value)
    if len(values) % 2:
        values.append(0x0F)
    return bytes(values[i] | (values[i + 1] << 4) for i in range(0, len(values), 2))


def number_parts(number: str, plain_toa: int) -> tuple[int, str]:
    if number.startswith("+"):
        return TOA_INTERNATIONAL, number[1:]
    return plain_toa, number


def encode_address(number: str, plain_toa: int = TOA_UNKNOWN) -> bytes:
    """A phone number: "+digits" is international, bare digits get `plain_toa`."""
    toa, digits = number_parts(number, plain_toa)
    if not digits or len(digits) > MAX_ADDRESS_DIGITS:
        raise PduError("address must have 1 to 20 digits")
    return bytes((len(digits), toa)) + encode_bcd(digits)


def alphanumeric_address(name: str) -> bytes:
    try:
        septets = encode_gsm7_septets(name)
    except ValueError:
        raise PduError("alphanumeric address is not in the GSM 7-bit alphabet") from None
    if not septets or len(septets) > MAX_ALPHANUMERIC_SEPTETS:
        raise PduError("alphanumeric address must have 1 to 11 septets")
    packed = pack_septets(septets)
    return bytes(((7 * len(septets) + 3) // 4, TOA_ALPHANUMERIC)) + packed


def encode_sender(sender: str) -> bytes:
    if sender.startswith("+") and sender[1:].isdigit():
        return encode_address(sender)
    if sender.isdigit() and sender.isascii():
        return encode_address(sender, TOA_NATIONAL)
    return alphanumeric_address(sender)


def encode_smsc(smsc: str | None) -> bytes:
    if not smsc:
        return b"\x00"
    toa, digits = number_parts(smsc, TOA_UNKNOWN)
    if not digits or len(digits) > 2 * (MAX_SMSC_OCTETS - 1):
        raise PduError("SMSC address must have 1 to 20 digits")
    body = bytes((toa,)) + encode_bcd(digits)
    return bytes((len(body),)) + body


def encode_timestamp(moment: datetime) -> bytes:
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


def checked_octet(value: int, what: str) -> int:
    if not 0 <= value <= 0xFF:
        raise PduError(f"{what} must be in 0..255")
    return value
