"""Formula injection on export (issue 15, point 8): a cell a spreadsheet would run is
made text; numbers and ordinary text are left as they are."""

from __future__ import annotations

import csv
import io

import pytest

from gateway.csv_safe import csv_text, safe_cell


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
