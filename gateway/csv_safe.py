"""CSV cells a spreadsheet will not run: formula injection escaped (OWASP "CSV injection").

A cell someone else typed (a survey answer, a label, a name) that starts with `=`, `+`,
`-`, `@`, a tab or a carriage return (or the full-width forms some spreadsheets fold) is
read as a formula by Excel, LibreOffice and Sheets; a leading `'` makes it text. A cell
that is just a number (`-3`, `+12025550123`, `7.5`, or an int or float) is left as it
is: a spreadsheet reads it as that number, and it can call nothing. Every export writes
its lines with `csv_line` or `csv_text`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence

TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?", re.ASCII)


def safe_cell(value: object) -> str:
    """`value` as CSV cell text, escaped if a spreadsheet would take it as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value)
    if text.startswith(TRIGGERS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def unescaped(text: str) -> str:
    """A cell read back from one of our exports: the `'` that `safe_cell` put before a
    formula start is dropped, so an export re-imports as it was written. (A text that
    itself began with `'` and a formula start comes back without that quote.)"""
    if text.startswith("'") and text[1:].startswith(TRIGGERS):
        return text[1:]
    return text


def csv_line(values: Iterable[object]) -> str:
    """One CSV line (RFC 4180 quoting, CRLF) of escaped cells."""
    return csv_text([list(values)])


def csv_text(rows: Iterable[Sequence[object]]) -> str:
    """Rows as CSV (RFC 4180: CRLF, quotes doubled), every cell through `safe_cell`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return out.getvalue()
