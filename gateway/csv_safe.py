"""CSV cells a spreadsheet will not run: formula injection escaped (OWASP).

A cell a user or a patient could have written that starts with `=`, `+`, `-`, `@`, a
tab or a carriage return (or their full-width forms, which some spreadsheets fold) is
read as a formula by Excel, LibreOffice and Google Sheets; a leading `'` makes it text.
Numbers are written as they are (a negative count stays a number).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def safe_cell(value: object) -> str:
    """`value` as CSV cell text, escaped if a spreadsheet would take it as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value)
    return "'" + text if text.startswith(TRIGGERS) else text


def csv_text(rows: Iterable[Sequence[object]]) -> str:
    """Rows as CSV (RFC 4180: CRLF, quotes doubled), every cell through `safe_cell`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return out.getvalue()
