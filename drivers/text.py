"""SMS body text: choosing the encoding, splitting into segments, GSM 7-bit septets.

Theory of operation. A body goes out in the GSM 7-bit default alphabet (3GPP TS 23.038)
when every character is in its basic table or its extension table; an extension
character costs two septets (escape 0x1B, then its code). Any other body goes out as
UCS-2, which on the wire is UTF-16-BE, so a character outside the BMP (an emoji) costs
two units. One SMS holds 160 septets or 70 units. A longer body becomes a concatenated
message whose parts each give six octets to the concatenation UDH, leaving 153 septets
or 67 units. `split` fills parts greedily with whole characters, so an escape sequence or
a surrogate pair is never cut, parts join back to the body, and the part count is the
smallest possible. The UDH counts parts in one octet, so a body never has more than 255.

The septet helpers work on unpacked septets, one per byte; `pack_septets` and
`unpack_septets` convert to and from the packed 7-bit form of SMS PDUs, with fill bits
for a septet stream that starts after a UDH.

Nothing here does I/O, and no error message contains the body: bodies are patient data.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

GSM7_ESCAPE = 0x1B
GSM7_SINGLE_SEPTETS = 160
GSM7_PART_SEPTETS = 153
UCS2_SINGLE_UNITS = 70
UCS2_PART_UNITS = 67
MAX_CONCAT_SEGMENTS = 255

# Index = septet value. Index 0x1B holds "\x1b" only as a placeholder for the escape to
# the extension table; it is not a character of the alphabet.
GSM7_BASIC: str = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "\u0394_\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3\u0398\u039e\x1bÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)

GSM7_EXTENSION: dict[str, int] = {
    "\x0c": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}

_BASIC_SEPTETS = {char: septet for septet, char in enumerate(GSM7_BASIC) if septet != GSM7_ESCAPE}
_EXTENSION_CHARS = {code: char for char, code in GSM7_EXTENSION.items()}
# For str.translate: each GSM character to its septet (an extension character to the
# escape and its code), and every other ASCII character to a non-ASCII stand-in, so the
# result is ASCII exactly when the whole text was in the alphabet.
_SEPTETS_OF: dict[int, str] = {
    **dict.fromkeys(range(0x80), "\ufffd"),
    **{ord(char): chr(septet) for char, septet in _BASIC_SEPTETS.items()},
    **{ord(char): chr(GSM7_ESCAPE) + chr(code) for char, code in GSM7_EXTENSION.items()},
}
_UCS2_ATOM = re.compile("[\ud800-\udbff][\udc00-\udfff]|.", re.DOTALL)
_SURROGATE_PAIR_OR_LONE = re.compile("([\ud800-\udbff][\udc00-\udfff])|[\ud800-\udfff]")


class Encoding(enum.StrEnum):
    GSM7 = "gsm7"
    UCS2 = "ucs2"


class BodyTooLong(ValueError):
    """The body needs more segments than allowed; carries counts only, never the text."""

    def __init__(self, segments: int, limit: int) -> None:
        super().__init__(f"body needs {segments} segments, the limit is {limit}")
        self.segments = segments
        self.limit = limit

    def __reduce__(self) -> tuple[type[BodyTooLong], tuple[int, int]]:
        return type(self), (self.segments, self.limit)


@dataclass(frozen=True, slots=True)
class SegmentPlan:
    """How a body is sent: `units` is septets for GSM7 and UTF-16 units for UCS2."""

    encoding: Encoding
    parts: tuple[str, ...]
    units: int

    @property
    def segments(self) -> int:
        return len(self.parts)


_GSM7_ONLY = re.compile(
    "[" + re.escape("".join(_BASIC_SEPTETS) + "".join(GSM7_EXTENSION)) + "]*", re.DOTALL
)
_EXTENSION_CHAR_RE = re.compile("[" + re.escape("".join(GSM7_EXTENSION)) + "]")
_SURROGATE_CODE_POINT = re.compile("[\ud800-\udfff]")
_ASTRAL_CHARS = re.compile("[\U00010000-\U0010ffff]")


def is_gsm7(text: str) -> bool:
    return _GSM7_ONLY.fullmatch(text) is not None


def choose_encoding(text: str) -> Encoding:
    return Encoding.GSM7 if is_gsm7(text) else Encoding.UCS2


def _septet_cost(char: str) -> int:
    if char in _BASIC_SEPTETS:
        return 1
    if char in GSM7_EXTENSION:
        return 2
    raise ValueError("text has a character outside the GSM 7-bit alphabet")


def septet_length(text: str) -> int:
    """Septets `text` takes in GSM 7-bit; ValueError if it is not representable."""
    if not is_gsm7(text):
        raise ValueError("text has a character outside the GSM 7-bit alphabet")
    return len(text) + len(_EXTENSION_CHAR_RE.findall(text))


def ucs2_units(text: str) -> int:
    """UTF-16 code units `text` takes; a character outside the BMP takes two."""
    return len(text) + len(_ASTRAL_CHARS.findall(text))


def _fill_greedily(atoms: list[str], cost: Callable[[str], int], capacity: int) -> Iterator[str]:
    part: list[str] = []
    used = 0
    for atom in atoms:
        atom_cost = cost(atom)
        if used + atom_cost > capacity:
            yield "".join(part)
            part, used = [], 0
        part.append(atom)
        used += atom_cost
    yield "".join(part)


def split(
    text: str, max_segments: int | None = None, encoding: Encoding | None = None
) -> SegmentPlan:
    """Plan the segments of `text`, in `encoding` or the cheapest one that represents it.

    Raises ValueError if `encoding` is GSM7 and the text is not representable in it, or
    if `max_segments` exceeds 255; BodyTooLong if the body needs more segments than
    `max_segments` (255 when not given).
    """
    limit = MAX_CONCAT_SEGMENTS if max_segments is None else max_segments
    if limit > MAX_CONCAT_SEGMENTS:
        raise ValueError(f"max_segments cannot exceed {MAX_CONCAT_SEGMENTS}")
    gsm7 = is_gsm7(text)
    if encoding is None:
        chosen = Encoding.GSM7 if gsm7 else Encoding.UCS2
    else:  # a member as it is (an enum call costs about a microsecond per message)
        chosen = encoding if isinstance(encoding, Encoding) else Encoding(encoding)
    if chosen is Encoding.GSM7:
        if not gsm7:
            raise ValueError("text has a character outside the GSM 7-bit alphabet")
        units = len(text) + len(_EXTENSION_CHAR_RE.findall(text))
        single_capacity, part_capacity = GSM7_SINGLE_SEPTETS, GSM7_PART_SEPTETS
    else:
        units = ucs2_units(text)
        single_capacity, part_capacity = UCS2_SINGLE_UNITS, UCS2_PART_UNITS
    # Counting is done in C (regexes); only bodies that need splitting walk characters.
    if units <= single_capacity:
        parts: tuple[str, ...] = (text,)
    elif units == len(text) and not _SURROGATE_CODE_POINT.search(text):
        # One unit per character and no pair to keep together: plain slices.
        parts = tuple(text[i : i + part_capacity] for i in range(0, len(text), part_capacity))
    elif chosen is Encoding.GSM7:
        parts = tuple(_fill_greedily(list(text), _septet_cost, part_capacity))
    else:
        parts = tuple(_fill_greedily(_UCS2_ATOM.findall(text), ucs2_units, part_capacity))
    if len(parts) > limit:
        raise BodyTooLong(len(parts), limit)
    return SegmentPlan(chosen, parts, units)


def encode_gsm7_septets(text: str) -> bytes:
    """One septet per byte; an extension character becomes 0x1B and its code."""
    septets = text.translate(_SEPTETS_OF)
    if septets.isascii():  # every character was in the alphabet (see _SEPTETS_OF)
        return septets.encode("ascii")
    alphabet = _BASIC_SEPTETS.keys() | GSM7_EXTENSION.keys()
    position = next(i for i, char in enumerate(text) if char not in alphabet)
    raise ValueError(f"character at position {position} is not in the GSM 7-bit alphabet")


def decode_gsm7_septets(data: bytes) -> str:
    """Inverse of `encode_gsm7_septets`, lenient the way TS 23.038 asks receivers to be.

    An escape followed by a code the extension table does not define decodes as the
    basic-table character of that code. Escape-escape (reserved for a further extension
    table) and a trailing lone escape each decode as a space. A byte above 0x7F is not a
    septet and raises ValueError.
    """
    if any(byte > 0x7F for byte in data):
        raise ValueError("data has a byte above 0x7F, which is not a septet")
    chars: list[str] = []
    position = 0
    while position < len(data):
        septet = data[position]
        position += 1
        if septet != GSM7_ESCAPE:
            chars.append(GSM7_BASIC[septet])
        elif position == len(data):
            chars.append(" ")
        else:
            code = data[position]
            position += 1
            if code == GSM7_ESCAPE:
                chars.append(" ")
            else:
                chars.append(_EXTENSION_CHARS.get(code, GSM7_BASIC[code]))
    return "".join(chars)


def _check_fill_bits(fill_bits: int) -> None:
    if not 0 <= fill_bits <= 6:
        raise ValueError("fill_bits must be between 0 and 6")


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack septets LSB first after `fill_bits` zero bits, into ceil((7n + fill) / 8) octets.

    The septet count is not recoverable from the octets (seven septets leave seven zero
    bits that look like '@'), so the receiver needs it, as TP-UDL carries it.
    """
    _check_fill_bits(fill_bits)
    packed = bytearray()
    accumulator, bits = 0, fill_bits
    for septet in septets:
        if septet > 0x7F:
            raise ValueError("septets has a byte above 0x7F")
        accumulator |= septet << bits
        bits += 7
        while bits >= 8:
            packed.append(accumulator & 0xFF)
            accumulator >>= 8
            bits -= 8
    if bits:
        packed.append(accumulator)
    return bytes(packed)


def unpack_septets(data: bytes, count: int, fill_bits: int = 0) -> bytes:
    """Inverse of `pack_septets`: `count` septets after `fill_bits` leading bits of `data`."""
    _check_fill_bits(fill_bits)
    if count < 0:
        raise ValueError("count must not be negative")
    needed = (7 * count + fill_bits + 7) // 8
    if len(data) < needed:
        raise ValueError(f"{count} septets need {needed} octets, got {len(data)}")
    septets = bytearray()
    accumulator, bits = 0, 0
    for index, octet in enumerate(data[:needed]):
        if index == 0:
            accumulator, bits = octet >> fill_bits, 8 - fill_bits
        else:
            accumulator |= octet << bits
            bits += 8
        while bits >= 7 and len(septets) < count:
            septets.append(accumulator & 0x7F)
            accumulator >>= 7
            bits -= 7
    return bytes(septets)


def _replace_lone_surrogates(text: str) -> str:
    return _SURROGATE_PAIR_OR_LONE.sub(lambda match: match.group(1) or "\ufffd", text)


def encode_ucs2(text: str) -> bytes:
    """UTF-16-BE; a lone surrogate becomes U+FFFD, a surrogate pair stays a pair."""
    return _replace_lone_surrogates(text).encode("utf-16-be", errors="surrogatepass")


def decode_ucs2(data: bytes) -> str:
    """Decode UTF-16-BE; a lone surrogate or a trailing odd octet becomes U+FFFD."""
    odd_tail = "\ufffd" if len(data) % 2 else ""
    decoded = data[: len(data) - len(data) % 2].decode("utf-16-be", errors="surrogatepass")
    return _replace_lone_surrogates(decoded) + odd_tail
