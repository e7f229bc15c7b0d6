"""`gateway/csv_safe.py`: cells a spreadsheet would run as a formula are escaped; plain
numbers (a negative answer, an E.164 number) are not; quoting survives any text."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.csv_safe import csv_line, safe_cell


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=1+1", "'=1+1"),
        ("+SUM(A1)", "'+SUM(A1)"),
        ("-2+3", "'-2+3"),
        ("@cmd", "'@cmd"),
        ("\t=x", "'\t=x"),
        ("\r=x", "'\r=x"),
        ("-3", "-3"),
        ("+12025550123", "+12025550123"),
        ("7.5", "7.5"),
        ("fine = good", "fine = good"),
        (None, ""),
        (True, "True"),
    ],
)
def test_formula_cells_are_escaped(value: object, cell: str) -> None:
    assert safe_cell(value) == cell


@given(st.lists(st.text(max_size=30), min_size=1, max_size=5))
def test_a_line_reads_back_with_no_cell_a_formula(values: list[str]) -> None:
    (row,) = csv.reader(io.StringIO(csv_line(values), newline=""))
    assert len(row) == len(values)
    for read, value in zip(row, values, strict=True):
        assert read in (value, "'" + value)
        assert not read.startswith(("=", "@", "\t", "\r")) or read == value == ""
