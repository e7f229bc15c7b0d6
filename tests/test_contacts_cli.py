"""Issue 15 point 1 on the console: `smsgw import contacts FILE` with a progress line,
the refused lines by number and code (never their content), and the sample file the
README's walkthrough imports."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from tests.test_cli import _init

SAMPLE = Path(__file__).resolve().parent.parent / "config" / "samples" / "contacts.csv"


def test_the_sample_file_imports_with_progress_and_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, _ = _init(tmp_path, capsys)
    args = ["import", "contacts", str(SAMPLE), "--config", str(conf), "--group", "Spring"]
    assert main(args) == 1  # some lines refused
    out = capsys.readouterr()
    size = SAMPLE.stat().st_size
    assert out.err.splitlines()[-1] == f"contacts import, bytes read: {size:,}/{size:,} (100%)"
    lines = out.out.splitlines()
    assert lines[0].startswith("group g") and lines[0].endswith(" created")
    table = [line.split() for line in lines[1:6]]
    assert table == [
        ["LINE", "CODE", "FIELD"],
        ["21", "invalid_number", "number"],
        ["41", "invalid_language", "language"],
        ["61", "invalid_age_band", "age_band"],
        ["81", "missing_value", "number"],
    ]
    assert lines[-1] == (
        "105 rows: 100 new, 0 updated, 1 unchanged, 1 repeated in the file, 4 refused"
        " (read as utf-8)"
    )
    # No number, not even masked (the group's random id is left out: it may hold "555").
    assert "555" not in out.out.replace(lines[0], "")
    assert main(args) == 1
    again = capsys.readouterr().out.splitlines()
    assert again[-1].startswith("105 rows: 0 new, 0 updated, 101 unchanged")
    assert not again[0].startswith("group")  # the group is found by its name now


def test_a_missing_file_or_a_bad_mapping_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, _ = _init(tmp_path, capsys)
    assert main(["import", "contacts", str(tmp_path / "none.csv"), "--config", str(conf)]) == 2
    assert "is not a file" in capsys.readouterr().err
    listing = tmp_path / "l.csv"
    listing.write_text("Cell\n+12025550147\n")
    assert main(["import", "contacts", str(listing), "--config", str(conf), "--map", "x=y"]) == 2
    assert "--map" in capsys.readouterr().err
    ok = ["import", "contacts", str(listing), "--config", str(conf), "--map", "Cell=number"]
    assert main(ok) == 0
    assert "1 new" in capsys.readouterr().out
