"""CSV files read as a stream: bytes to text, text to records, one record at a time.

Theory of operation. The input arrives as byte chunks (an HTTP body, an upload, a
file) and is never held whole.

1. `Decoder` finds the encoding from the first bytes: a byte-order mark says UTF-8,
   UTF-16 LE or BE; NUL bytes in every other place say UTF-16 without one; otherwise
   UTF-8, until a byte sequence is not UTF-8, and Latin-1 from there on (the usual
   export of an old spreadsheet). What it settled on is reported, never guessed
   silently.
2. `lines` cuts the text at line ends. A line longer than the record cap comes out in
   pieces, each marked as not ending the line, so no line is held whole either.
3. `Splitter` joins lines into one record while a quoted field is still open. A quote
   opens a field only at the field's start (`"a,b"`); one inside a field (`O"Brien`)
   is data, as the csv module reads it. A record over the size cap is refused and the
   rest of its line skipped; a quote left open for more than MAX_RECORD_LINES lines is
   refused for its first line only, and the lines after it are read again as records
   of their own, so one stray quote costs one line, not the file.

Each record comes out as (its first line's number, its fields), or instead of fields
the code of why it cannot be read (`too_long`, `unclosed_quote`, `unreadable_line`);
the caller turns that into a per-line error that names the line and the code, never
the content.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import io
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

MAX_RECORD = 64 * 1024  # characters
MAX_RECORD_LINES = 20  # physical lines one quoted record may span


class HeaderError(ValueError):
    """The file cannot be read at all (no header, a needed column missing)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def header_key(header: str) -> str:
    """A header as a lookup key: case, spaces and dashes folded, a stray BOM dropped."""
    return re.sub(r"[\s\-]+", "_", header.strip().lower().lstrip("\ufeff"))


def parse_mapping(text: str, fields: tuple[str, ...]) -> dict[str, str]:
    """`number=Mobile,clinic=Site` → {"number": "Mobile", ...}; `Mobile=number` (the
    column first) is read the same way. ValueError names what is wrong (field names
    only, which are ours)."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, header = part.partition("=")
        name = name.strip().lower()
        if name not in fields and header.strip().lower() in fields:
            name, header = header.strip().lower(), part.partition("=")[0]
        if not sep or name not in fields or not header.strip():
            raise ValueError(
                f"write each mapping as FIELD=HEADER with FIELD one of {', '.join(fields)}"
            )
        out[name] = header.strip()
    return out


def map_columns(
    header: list[str], mapping: Mapping[str, str], aliases: Mapping[str, str]
) -> tuple[dict[str, int], list[str]]:
    """Field → column index (a mapped column first, then a header an alias names; the
    first of two like headers wins), and the headers no field takes (reported, not
    guessed). HeaderError when a mapped column is missing or none holds the number."""
    by_key: dict[str, int] = {}
    for i, h in enumerate(header):
        by_key.setdefault(header_key(h), i)
    found: dict[str, int] = {}
    for name, column in mapping.items():
        if header_key(column) not in by_key:
            raise HeaderError("missing_column", f"{name}: the mapped column is not in the header")
        found[name] = by_key[header_key(column)]
    for key, i in by_key.items():
        alias = aliases.get(key)
        if alias is not None and alias not in found and i not in found.values():
            found[alias] = i
    if "number" not in found:
        raise HeaderError("missing_column", "number: no column holds the phone number")
    ignored = [h for i, h in enumerate(header) if i not in found.values()]
    return found, ignored


@dataclass(frozen=True, slots=True)
class LineError:
    """A line that was not imported: its number, why (a code), and the column."""

    line: int
    code: str
    field: str | None = None


class Decoder:
    """Incremental bytes → text with the encoding found from the input itself."""

    def __init__(self) -> None:
        self.encoding: str | None = None  # "utf-8", "utf-8-sig", "utf-16", "latin-1"
        self.fell_back = False  # UTF-8 stopped making sense: Latin-1 from there on
        self._head = b""
        self._inner: codecs.IncrementalDecoder | None = None

    def _settle(self, head: bytes) -> None:
        if head.startswith(codecs.BOM_UTF8):
            self.encoding = "utf-8-sig"
        elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            self.encoding = "utf-16"
        elif len(head) >= 4 and head[1] == 0 and head[3] == 0 and head[0] and head[2]:
            self.encoding = "utf-16-le"
        elif len(head) >= 4 and head[0] == 0 and head[2] == 0 and head[1] and head[3]:
            self.encoding = "utf-16-be"
        else:
            self.encoding = "utf-8"
        self._inner = codecs.getincrementaldecoder(self.encoding)(errors="strict")

    def decode(self, chunk: bytes, final: bool = False) -> str:
        if self._inner is None:
            self._head += chunk
            if len(self._head) < 4 and not final:
                return ""
            self._settle(self._head)
            chunk, self._head = self._head, b""
        assert self._inner is not None
        try:
            return self._inner.decode(chunk, final)
        except UnicodeDecodeError as e:
            if self.encoding not in ("utf-8", "utf-8-sig"):
                return self._replace(e, final)
            # Text before the first bad byte was UTF-8; the rest is read as Latin-1.
            data = bytes(e.object)
            self.fell_back = True
            self.encoding = "latin-1"
            self._inner = codecs.getincrementaldecoder("latin-1")()
            return data[: e.start].decode("utf-8") + self._inner.decode(data[e.start :], final)

    def _replace(self, e: UnicodeDecodeError, final: bool) -> str:
        # UTF-16 with a broken pair: the rest decoded with replacements (a line error
        # follows wherever a number or a key no longer reads).
        self._inner = codecs.getincrementaldecoder(self.encoding or "utf-16")(errors="replace")
        return self._inner.decode(bytes(e.object), final)


async def file_chunks(
    path: Path, on_read: Callable[[int], None] | None = None, size: int = 64 * 1024
) -> AsyncIterator[bytes]:
    """A file's bytes, a chunk at a time (read off the event loop); `on_read` gets
    each chunk's length (an upload's progress)."""
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, size):
            if on_read is not None:
                on_read(len(chunk))
            yield chunk


async def lines(
    chunks: AsyncIterable[bytes], decoder: Decoder | None = None, max_piece: int = MAX_RECORD
) -> AsyncIterator[tuple[str, bool]]:
    """(text, ends_the_line) pieces: whole lines with their ending, or pieces of at
    most `max_piece` characters of a longer one."""
    decoder = decoder or Decoder()
    pending = ""
    async for chunk in chunks:
        pending += decoder.decode(chunk)
        start = 0
        while (cut := pending.find("\n", start)) >= 0:
            yield pending[start : cut + 1], True
            start = cut + 1
        pending = pending[start:]
        while len(pending) > max_piece:
            yield pending[:max_piece], False
            pending = pending[max_piece:]
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending, True


def quote_open(line: str, open_: bool) -> bool:
    """Whether a quoted field is still open after `line` (open before it: `open_`)."""
    if '"' not in line:
        return open_
    at_start = not open_
    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if open_:
            if ch == '"':
                if i + 1 < n and line[i + 1] == '"':
                    i += 2
                    continue
                open_ = False
        elif ch == '"' and at_start:
            open_ = True
        at_start = ch == "," and not open_
        i += 1
    return open_


Record = tuple[int, list[str] | str]  # (first line, fields or why it cannot be read)
TOO_LONG = "too_long"
UNCLOSED_QUOTE = "unclosed_quote"
UNREADABLE = "unreadable_line"


@dataclass(slots=True)
class _Line:
    number: int
    text: str


class Splitter:
    """Physical lines in, records out (see the module's theory of operation)."""

    def __init__(self, max_record: int = MAX_RECORD) -> None:
        self.max_record = max_record
        self._parts: list[_Line] = []
        self._open = False
        self._size = 0
        self._skipping = False  # the rest of a line already refused as too long
        self._piece = ""  # a line arriving in pieces, so far
        self._number = 0
        self._fresh = True

    def feed(self, text: str, ends: bool) -> Iterator[Record]:
        if self._fresh:
            self._number += 1
        self._fresh = ends
        if self._skipping:
            self._skipping = not ends
            return
        self._piece += text
        if self._size + len(self._piece) > self.max_record:
            start = self._parts[0].number if self._parts else self._number
            self._reset()
            self._piece = ""
            self._skipping = not ends
            yield start, TOO_LONG
            return
        if not ends:
            return
        line, self._piece = _Line(self._number, self._piece), ""
        yield from self._take(line)

    def _take(self, line: _Line) -> Iterator[Record]:
        self._parts.append(line)
        self._size += len(line.text)
        self._open = quote_open(line.text, self._open)
        if self._open:
            if len(self._parts) > MAX_RECORD_LINES:
                first, *rest = self._parts
                self._reset()
                yield first.number, UNCLOSED_QUOTE
                for again in rest:
                    yield from self._take(again)
            return
        record = "".join(p.text for p in self._parts)
        start = self._parts[0].number
        self._reset()
        if not record.strip():
            return
        try:
            yield start, next(csv.reader(io.StringIO(record, newline="")), [])
        except csv.Error:
            yield start, UNREADABLE

    def finish(self) -> Iterator[Record]:
        """The end of the input: a record still open cannot be read; the lines after
        its first are read again on their own."""
        while self._parts:
            first, *rest = self._parts
            self._reset()
            yield first.number, UNCLOSED_QUOTE
            for again in rest:
                yield from self._take(again)

    def _reset(self) -> None:
        self._parts, self._open, self._size = [], False, 0


async def coded_records(
    chunks: AsyncIterable[bytes], decoder: Decoder | None = None, max_record: int = MAX_RECORD
) -> AsyncIterator[Record]:
    """(first line number, fields or the code of why not) per CSV record."""
    splitter = Splitter(max_record)
    async for text, ends in lines(chunks, decoder, max_record):
        for out in splitter.feed(text, ends):
            yield out
    for out in splitter.finish():
        yield out


async def records(
    chunks: AsyncIterable[bytes], decoder: Decoder | None = None, max_record: int = MAX_RECORD
) -> AsyncIterator[tuple[int, list[str] | None]]:
    """(first line number, fields) per CSV record; fields None for one that cannot be
    read (too long, or a quote never closed)."""
    async for line, fields in coded_records(chunks, decoder, max_record):
        yield line, None if isinstance(fields, str) else fields
