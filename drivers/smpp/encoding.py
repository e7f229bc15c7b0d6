"""SMPP text encodings: an `OutboundSms` as submit_sm parameters, inbound octets as text.

Theory of operation. `LinkEncoding` says which data_coding carries GSM-representable
bodies on a link (0, the SMSC default alphabet, or 3, Latin-1), how a long body travels
(`udh`, `sar`, `payload`) and how wide the UDH reference is. Other bodies go as UCS-2
(8, UTF-16-BE), as does a GSM body on a Latin-1 link with a character Latin-1 lacks (€,
Δ). data_coding 0 goes unpacked, one septet per octet, an extension character as 0x1B
and its code: the SMSC packs septets for the air, not the ESME.

One SMS carries 140 octets of user data (3GPP TS 23.040 9.2.3.24). short_message may
hold 254 (SMPP 3.4 5.2.21), but that is what the PDU holds, not what a handset gets, so
parts are sized for the air. A concatenated part gives 6 octets to a UDH with an 8-bit
reference (`05 00 03 RR TT NN`), 7 with a 16-bit one (`06 08 04 RRRR TT NN`), leaving
(140 - 6) * 8 // 7 = 153 septets or 134 octets, and 152 septets or 133 octets. So
(`part_limit`), for one SMS / a part with 8-bit ref / a part with 16-bit ref:

- data_coding 0: 160 / 153 / 152 septets, an extension character counting two. That is
  Kannel's `sms_split` ((140 - udh) * 8 / 7 septets, sent unpacked after the UDH in
  short_message) and Jasmin's 160/153. short_message then holds up to 6 + 153 = 159
  octets: over 140, but the SMSC counts septets, and both gateways send it so.
- data_coding 3: 140 / 134 / 133 octets (Jasmin's 140/134) and also 160 / 153 / 152
  septets: no handset alphabet is Latin-1, and many SMSCs transcode it to GSM 7-bit for
  the air, where `^{}\\[~]|` cost two septets. Only GSM-representable text goes as 3,
  so both counts are defined, and a part within both fits whichever the SMSC does.
- data_coding 8: 70 / 67 / 66 UTF-16 units (140 / 134 / 132 octets); a surrogate pair
  is never cut.

In `udh` mode each part carries the UDH (esm_class UDHI, 0x40). In `sar` mode the SMSC
builds the UDH from the sar_* TLVs, and SMPP 3.4 does not say which IE it writes: parts
are sized for a UDH of `ref_bits` (as Jasmin sizes SAR parts like 8-bit UDH parts) and,
with `ref_bits` 8, sar_msg_ref_num carries `reference & 0xFF` so an SMSC that writes IE
0x00 loses nothing. In `payload` mode the whole body goes in message_payload of one
submit_sm, with an empty short_message, and the SMSC splits it. In every mode a body
that fits one SMS goes plain in short_message: every SMSC takes that.

`sms.parts` (`drivers.text.split`: 153 septets / 67 units) are used when each fits;
else (16-bit reference, Latin-1) the body is split again, greedily, so the count may
differ from `len(sms.parts)`. Parts join back to the body; the reference is
`sms.reference`, so a resend is identical.

Inbound, `decode_inbound` strips a UDH when esm_class has UDHI, keeps its concatenation
IE (0x00 or 0x08; others are ignored; the last valid one counts, TS 23.040 9.2.3.24) and
decodes the rest by data_coding, SMPP 3.4 values 0-14 and, above, the GSM DCS some SMSCs
pass through (TS 23.038 4). Nothing raises: a UDH longer than the octets is no UDH; an
odd UCS-2 octet is U+FFFD; data_coding 0 octets above 0x7F cannot be septets, so they
come from an SMSC that sends Latin-1, and decode so; binary data (2, 4, 8-bit DCS) is
returned as lowercase hex, lossless and printable; an unknown data_coding decodes as
Latin-1. `DecodedText.exact` is False whenever the text is such a guess. Plain ASCII
from an SMSC whose default alphabet is ASCII decodes the same in GSM except for a few
characters (@ $ _ [ \\ ] ^ ` { | } ~); such a link passes `default_alphabet="latin-1"`.

Nothing here does I/O, and no repr or error message holds a body or a number.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from drivers.base import OutboundSms
from drivers.smpp.pdu import Tag
from drivers.text import (
    GSM7_EXTENSION,
    MAX_CONCAT_SEGMENTS,
    BodyTooLong,
    Encoding,
    decode_gsm7_septets,
    decode_ucs2,
    encode_gsm7_septets,
    encode_ucs2,
    is_gsm7,
    septet_length,
    ucs2_units,
)

DC_DEFAULT = 0
DC_LATIN1 = 3
DC_UCS2 = 8
ESM_UDHI = 0x40
AIR_OCTETS = 140  # TP-User-Data of one SMS
MESSAGE_PAYLOAD_MAX = 0xFFFF
_IEI_CONCAT_8 = 0x00
_IEI_CONCAT_16 = 0x08

Charset = Literal["gsm", "ascii", "latin-1", "iso8859-5", "iso8859-8", "ucs2", "binary"]


@dataclass(frozen=True, slots=True)
class LinkEncoding:
    """A link's text settings (declared per route)."""

    gsm_coding: Literal[0, 3] = 0
    long_mode: Literal["udh", "sar", "payload"] = "udh"
    ref_bits: Literal[8, 16] = 8

    def __post_init__(self) -> None:
        if self.gsm_coding not in (0, 3):
            raise ValueError("gsm_coding must be 0 or 3")
        if self.long_mode not in ("udh", "sar", "payload"):
            raise ValueError("long_mode must be udh, sar or payload")
        if self.ref_bits not in (8, 16):
            raise ValueError("ref_bits must be 8 or 16")

    @property
    def concat_overhead(self) -> int:
        """Octets of the concatenation UDH, written by us (udh) or by the SMSC (sar)."""
        return 6 if self.ref_bits == 8 else 7


@dataclass(frozen=True, slots=True, repr=False)
class PartParams:
    """One submit_sm's text fields. `esm_class` has only UDHI; the caller ORs in the rest."""

    short_message: bytes
    data_coding: int
    esm_class: int = 0
    tlvs: dict[int, int | bytes] = field(default_factory=dict)

    def __repr__(self) -> str:
        tags = ", ".join(f"0x{tag:04x}" for tag in self.tlvs)
        return (
            f"PartParams(data_coding={self.data_coding}, esm_class=0x{self.esm_class:02x}, "
            f"sm_length={len(self.short_message)}, tlvs=[{tags}])"
        )

    def params(self) -> dict[str, int | bytes]:
        """The mandatory fields, to merge into a submit_sm's `params`."""
        return {
            "short_message": self.short_message,
            "data_coding": self.data_coding,
            "esm_class": self.esm_class,
        }


@dataclass(frozen=True, slots=True)
class Concat:
    """Where one part sits in a concatenated message; ValueError if impossible."""

    reference: int
    total: int
    seq: int
    ref_bits: int = 8

    def __post_init__(self) -> None:
        if self.ref_bits not in (8, 16):
            raise ValueError("ref_bits must be 8 or 16")
        if not 0 <= self.reference < 1 << self.ref_bits:
            raise ValueError("reference does not fit ref_bits")
        if not 1 <= self.seq <= self.total <= MAX_CONCAT_SEGMENTS:
            raise ValueError("need 1 <= seq <= total <= 255")


@dataclass(frozen=True, slots=True, repr=False)
class DecodedText:
    """Inbound text; `exact` is False when `charset` was a guess or octets were replaced."""

    text: str
    concat: Concat | None
    charset: Charset
    exact: bool = True

    def __repr__(self) -> str:
        return (
            f"DecodedText(chars={len(self.text)}, concat={self.concat!r}, "
            f"charset={self.charset!r}, exact={self.exact})"
        )


@dataclass(frozen=True, slots=True)
class PartLimit:
    """What one short_message may carry besides its UDH: encoded octets and air septets."""

    octets: int
    septets: int | None


@functools.lru_cache(maxsize=64)  # a few codings and UDH sizes; asked for every submit
def part_limit(data_coding: int, udh_octets: int) -> PartLimit:
    """The text budget of one SMS whose user data gives `udh_octets` to a UDH."""
    free = AIR_OCTETS - udh_octets
    septets = free * 8 // 7
    if data_coding == DC_DEFAULT:
        return PartLimit(septets, septets)  # unpacked: one octet per septet
    if data_coding == DC_LATIN1:
        return PartLimit(free, septets)
    return PartLimit(free - free % 2, None)


def choose_data_coding(text: str, encoding: str, link: LinkEncoding) -> int:
    """data_coding for `text` planned as `encoding` ("gsm7"/"ucs2") on `link`.

    A body planned as GSM7 that is not GSM-representable goes as UCS-2 rather than fail.
    """
    if encoding != Encoding.GSM7 or not is_gsm7(text):
        return DC_UCS2
    if link.gsm_coding == DC_DEFAULT:
        return DC_DEFAULT
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return DC_UCS2
    return DC_LATIN1


def _cost_fn(data_coding: int) -> Callable[[str], tuple[int, int]]:
    """(octets in short_message, septets on the air) one character costs."""
    if data_coding == DC_DEFAULT:
        return lambda char: (2, 2) if char in GSM7_EXTENSION else (1, 1)
    if data_coding == DC_LATIN1:
        return lambda char: (1, 2) if char in GSM7_EXTENSION else (1, 1)
    return lambda char: (4, 0) if ord(char) > 0xFFFF else (2, 0)


def _split(text: str, data_coding: int, limit: PartLimit) -> list[str]:
    """Greedy whole-character parts within `limit`; the fewest parts possible."""
    cost = _cost_fn(data_coding)
    max_septets = limit.septets if limit.septets is not None else 0
    parts: list[str] = []
    start = octets = septets = 0
    for index, char in enumerate(text):
        char_octets, char_septets = cost(char)
        if octets + char_octets > limit.octets or septets + char_septets > max_septets:
            parts.append(text[start:index])
            start, octets, septets = index, 0, 0
        octets += char_octets
        septets += char_septets
    parts.append(text[start:])
    return parts


def _fits(text: str, data_coding: int, limit: PartLimit) -> bool:
    """Whether `text` fits one part, counted in C rather than character by character."""
    if data_coding not in (DC_DEFAULT, DC_LATIN1):
        return 2 * ucs2_units(text) <= limit.octets
    septets = septet_length(text)
    octets = septets if data_coding == DC_DEFAULT else len(text)
    return octets <= limit.octets and (limit.septets is None or septets <= limit.septets)


def _encode(text: str, data_coding: int) -> bytes:
    if data_coding == DC_DEFAULT:
        return encode_gsm7_septets(text)
    if data_coding == DC_LATIN1:
        return text.encode("latin-1")
    return encode_ucs2(text)


def _udh(reference: int, ref_bits: int, total: int, seq: int) -> bytes:
    if ref_bits == 8:
        return bytes((0x05, _IEI_CONCAT_8, 0x03, reference, total, seq))
    return bytes((0x06, _IEI_CONCAT_16, 0x04, reference >> 8, reference & 0xFF, total, seq))


def submit_parts(sms: OutboundSms, link: LinkEncoding) -> list[PartParams]:
    """The submit_sm text fields for `sms` on `link`, one item per submit_sm, in order.

    Raises BodyTooLong if the body needs more than 255 parts at this link's sizes, and
    ValueError if it exceeds message_payload's 65535 octets.
    """
    body = "".join(sms.parts)
    data_coding = choose_data_coding(body, sms.encoding, link)
    if data_coding == DC_DEFAULT:
        # Unpacked, one octet per septet: the encoded body's length is its septet count
        # (and octets), so one pass counts and encodes it (not a regex count, then this).
        septets = encode_gsm7_septets(body)
        if len(septets) <= part_limit(DC_DEFAULT, 0).octets:
            return [PartParams(septets, data_coding)]
    elif _fits(body, data_coding, part_limit(data_coding, 0)):
        return [PartParams(_encode(body, data_coding), data_coding)]
    if link.long_mode == "payload":
        payload = _encode(body, data_coding)
        if len(payload) > MESSAGE_PAYLOAD_MAX:
            raise ValueError("body exceeds the 65535 octets of message_payload")
        return [PartParams(b"", data_coding, tlvs={Tag.MESSAGE_PAYLOAD: payload})]
    limit = part_limit(data_coding, link.concat_overhead)
    parts = list(sms.parts)
    if len(parts) < 2 or not all(part and _fits(part, data_coding, limit) for part in parts):
        parts = _split(body, data_coding, limit)
    total = len(parts)
    if total > MAX_CONCAT_SEGMENTS:
        raise BodyTooLong(total, MAX_CONCAT_SEGMENTS)
    reference = sms.reference & (0xFF if link.ref_bits == 8 else 0xFFFF)
    result: list[PartParams] = []
    for seq, part in enumerate(parts, start=1):
        text = _encode(part, data_coding)
        if link.long_mode == "udh":
            udh = _udh(reference, link.ref_bits, total, seq)
            result.append(PartParams(udh + text, data_coding, ESM_UDHI))
        else:
            tlvs: dict[int, int | bytes] = {
                Tag.SAR_MSG_REF_NUM: reference,
                Tag.SAR_TOTAL_SEGMENTS: total,
                Tag.SAR_SEGMENT_SEQNUM: seq,
            }
            result.append(PartParams(text, data_coding, tlvs=tlvs))
    return result


# -- inbound ---------------------------------------------------------------------------


def _concat_ie(iei: int, value: bytes) -> Concat | None:
    if iei == _IEI_CONCAT_8 and len(value) == 3:
        reference, total, seq = value
        ref_bits = 8
    elif iei == _IEI_CONCAT_16 and len(value) == 4:
        reference, total, seq = int.from_bytes(value[:2], "big"), value[2], value[3]
        ref_bits = 16
    else:
        return None
    if not 1 <= seq <= total:  # TS 23.040 9.2.3.24.1: ignore such an IE
        return None
    return Concat(reference, total, seq, ref_bits)


def _split_udh(data: bytes) -> tuple[Concat | None, bytes]:
    """(concatenation IE, the octets after the UDH); no UDH if its length overruns."""
    if not data or 1 + data[0] > len(data):
        return None, data
    end = 1 + data[0]
    concat = None
    pos = 1
    while pos + 2 <= end:
        iei, length = data[pos], data[pos + 1]
        value_end = pos + 2 + length
        if value_end > end:
            break  # a broken IE ends the header; what came before still counts
        found = _concat_ie(iei, data[pos + 2 : value_end])
        if found is not None:
            concat = found
        pos = value_end
    return concat, data[end:]


def concat_from_tlvs(tlvs: Mapping[int, object]) -> Concat | None:
    """The sar_* TLVs as a `Concat` (ref_bits 16), or None if absent or inconsistent."""
    reference = tlvs.get(Tag.SAR_MSG_REF_NUM)
    total = tlvs.get(Tag.SAR_TOTAL_SEGMENTS)
    seq = tlvs.get(Tag.SAR_SEGMENT_SEQNUM)
    if not (isinstance(reference, int) and isinstance(total, int) and isinstance(seq, int)):
        return None
    if not 0 <= reference <= 0xFFFF or not 1 <= seq <= total <= MAX_CONCAT_SEGMENTS:
        return None
    return Concat(reference, total, seq, 16)


def _alphabet(data_coding: int) -> Charset | None:
    """What `data_coding` means: SMPP 3.4 5.2.19 for 0-14, else a GSM DCS; None: unknown."""
    smpp: dict[int, Charset] = {
        0: "gsm", 1: "ascii", 2: "binary", 3: "latin-1", 4: "binary",
        6: "iso8859-5", 7: "iso8859-8", 8: "ucs2",
    }  # fmt: skip
    if data_coding in smpp:
        return smpp[data_coding]
    # 5, 9, 10, 13, 14 (JIS, pictogram, ISO-2022-JP, Kanji, KS C 5601): unknown.
    if data_coding <= 0x0F:
        return None
    dcs_alphabets: tuple[Charset | None, ...] = ("gsm", "binary", "ucs2", None)
    group = data_coding >> 4
    if group in (0x1, 0x4, 0x5):  # general / automatic deletion, uncompressed
        return dcs_alphabets[(data_coding >> 2) & 0x03]
    if group in (0xC, 0xD):  # message waiting indication, GSM 7-bit
        return "gsm"
    if group == 0xE:  # message waiting indication, UCS-2
        return "ucs2"
    if group == 0xF:  # data coding / message class
        return "binary" if data_coding & 0x04 else "gsm"
    return None  # compressed (0x2-0x3, 0x6-0x7), reserved (0x8-0xB), out of range


def _decode_text(
    data: bytes, data_coding: int, default_alphabet: Literal["gsm", "latin-1"]
) -> tuple[str, Charset, bool]:
    alphabet = _alphabet(data_coding)
    if alphabet == "gsm" and default_alphabet == "latin-1":
        alphabet = "latin-1"
    if alphabet == "gsm":
        if max(data, default=0) <= 0x7F:
            return decode_gsm7_septets(data), "gsm", True
        return data.decode("latin-1"), "latin-1", False  # not septets: a Latin-1 SMSC
    if alphabet == "ascii":
        return data.decode("latin-1"), "ascii", max(data, default=0) <= 0x7F
    if alphabet == "binary":
        return data.hex(), "binary", True
    if alphabet == "ucs2":
        try:
            return data.decode("utf-16-be"), "ucs2", True
        except UnicodeDecodeError:
            return decode_ucs2(data), "ucs2", False
    if alphabet in ("iso8859-5", "iso8859-8"):
        try:
            return data.decode(alphabet), alphabet, True
        except UnicodeDecodeError:
            return data.decode(alphabet, errors="replace"), alphabet, False
    return data.decode("latin-1"), "latin-1", alphabet == "latin-1"


def decode_inbound(
    data: bytes,
    data_coding: int,
    esm_class: int,
    *,
    default_alphabet: Literal["gsm", "latin-1"] = "gsm",
) -> DecodedText:
    """Decode a deliver_sm/data_sm short_message (or message_payload); never raises.

    `default_alphabet` is what data_coding 0 means on this link: GSM 03.38 as SMPP
    says, or Latin-1 (which covers ASCII) for SMSCs that send that instead.
    """
    data = bytes(data)
    concat, body = _split_udh(data) if esm_class & ESM_UDHI else (None, data)
    text, charset, exact = _decode_text(body, data_coding, default_alphabet)
    return DecodedText(text, concat, charset, exact)


def decode_short_message(
    data: bytes, data_coding: int, esm_class: int
) -> tuple[str, Concat | None]:
    """`decode_inbound` as (text, concatenation IE or None); never raises."""
    decoded = decode_inbound(data, data_coding, esm_class)
    return decoded.text, decoded.concat
