"""Bytes of one MLLP frame to text: BOM stripped, MSH-18 (table 0211) mapped to a
codec, else the interface's default, else latin-1 with a flag (research §A6.6, §H.3).

Every byte string decodes to something, so no message goes un-acknowledged for its
bytes (the python-hl7 server's ASCII default drops "Müller" with no ACK). MSH-18 is
read from the first segment taken as latin-1, which every ASCII-compatible character
set leaves legible up to its separators.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

BOM = b"\xef\xbb\xbf"

# HL7 table 0211 -> Python codec (the ASCII-compatible ones an MLLP feed uses).
CODECS: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    "8859/1": "latin-1",
    "ISO IR100": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "ISO IR192": "utf-8",
    "GB 18030-2000": "gb18030",
    "BIG-5": "big5",
}

FLAG_UNKNOWN_CHARSET = "unknown_charset"  # MSH-18 names a set we do not map
FLAG_FALLBACK = "latin1_fallback"  # the chosen codec failed; read as latin-1


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    codec: str
    flag: str | None = None


def codec_for(label: str) -> str | None:
    """A table-0211 value or a Python codec name, as a Python codec name; None if neither."""
    label = label.strip()
    if not label:
        return None
    if (mapped := CODECS.get(label.upper())) is not None:
        return mapped
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def msh18(data: bytes) -> str:
    """MSH-18's first repetition, read without knowing the character set."""
    head = data.split(b"\r", 1)[0].split(b"\n", 1)[0].decode("latin-1")
    if not head.startswith("MSH") or len(head) < 4:
        return ""
    fields = head.split(head[3])
    if len(fields) < 18:
        return ""
    rep = fields[1][1:2] or "~"
    return fields[17].split(rep)[0]


def decode(data: bytes, default: str = "utf-8") -> Decoded:
    if data.startswith(BOM):
        data = data[len(BOM) :]
    label = msh18(data)
    flag = None
    chosen = codec_for(label) if label else None
    if label and chosen is None:
        flag = FLAG_UNKNOWN_CHARSET
    codec = chosen or default
    try:
        return Decoded(data.decode(codec), codec, flag)
    except (UnicodeDecodeError, LookupError):
        return Decoded(data.decode("latin-1"), "latin-1", FLAG_FALLBACK)
