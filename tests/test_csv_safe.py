"""Formula injection on export (issue 15, point 8): a cell a spreadsheet would run is
made text; numbers (also a plain number as text: a negative answer, an E.164 number)
and ordinary text are left as they are; quoting survives any text."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.csv_safe import csv_line, csv_text, safe_cell


@pytest.mark.parametrize(
    "value",
    ["=1+1", "+SUM(A1)", "-2+3", "@SUM(A1:A2)", "\tcmd", "\rcmd", "=HYPERLINK(\"http://x\")",
     "\uff1dSUM(A1)"],
)  # fmt: skip
def test_a_cell_a_spreadsheet_would_run_starts_with_a_quote(value: str) -> None:
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize(
    ("value", "cell"),
    [("north", "north"), ("a=b", "a=b"), (12, "12"), (-3, "-3"), (0.25, "0.25"), (None, ""),
     (True, "true"), ("", "")],
)  # fmt: skip
def test_other_cells_are_left_alone(value: object, cell: str) -> None:
    assert safe_cell(value) == cell


def test_quotes_commas_and_line_breaks_survive_a_round_trip() -> None:
    rows = [["key", "n"], ['say "hi", then\nleave', 3], ["=cmd|' /C calc'!A0", -1]]
    text = csv_text(rows)
    assert text.endswith("\r\n")
    back = list(csv.reader(io.StringIO(text)))
    assert back == [["key", "n"], ['say "hi", then\nleave', "3"], ["'=cmd|' /C calc'!A0", "-1"]]


@pytest.mark.parametrize("value", ["-3", "+12025550123", "7.5"])
def test_a_plain_number_as_text_stays_a_number(value: str) -> None:
    # A negative survey answer or an E.164 number: a spreadsheet reads it as a number.
    assert safe_cell(value) == value


@given(st.lists(st.text(max_size=30), min_size=1, max_size=5))
def test_a_line_reads_back_with_no_cell_a_formula(values: list[str]) -> None:
    (row,) = csv.reader(io.StringIO(csv_line(values), newline=""))
    assert len(row) == len(values)
    for read, value in zip(row, values, strict=True):
        assert read in (value, "'" + value)
        assert not read.startswith(("=", "@", "\t", "\r")) or read == value == ""
