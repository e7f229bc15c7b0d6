"""CSV cells safe to open in a spreadsheet (OWASP "CSV injection").

A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is read as a
formula by Excel, LibreOffice and Sheets; such a cell gets a leading `'`, which they
show as text. Every export that may carry text someone else typed (survey answers,
analytics labels, names) writes its lines with `csv_line`."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """`value` as a cell's text: None is empty; a formula start is escaped."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_line(values: Iterable[object]) -> str:
    """One CSV line (RFC 4180 quoting, CRLF) of escaped cells."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([safe_cell(v) for v in values])
    return out.getvalue()
