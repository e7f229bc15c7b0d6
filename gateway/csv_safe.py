"""CSV cells safe to open in a spreadsheet (OWASP "CSV injection").

A cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is read as a
formula by Excel, LibreOffice and Sheets; such a cell gets a leading `'`, which they
show as text. A cell that is just a number (`-3`, `+12025550123`, `7.5`) is left as it
is: a spreadsheet reads it as that number, and it can call nothing. Every export that
may carry text someone else typed (survey answers, analytics labels, names) writes its
lines with `csv_line`."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?", re.ASCII)


def safe_cell(value: object) -> str:
    """`value` as a cell's text: None is empty; a formula start is escaped."""
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def csv_line(values: Iterable[object]) -> str:
    """One CSV line (RFC 4180 quoting, CRLF) of escaped cells."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([safe_cell(v) for v in values])
    return out.getvalue()
