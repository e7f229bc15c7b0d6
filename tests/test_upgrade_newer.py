"""A store written by a newer smsgw (its schema version above this code's) is refused, at
`smsgw run` and at `smsgw doctor`, with one line that names both versions."""

from __future__ import annotations

import contextlib
import io
import sqlite3
import subprocess
from pathlib import Path

from gateway.cli import main
from gateway.store.schema import MIGRATIONS
from tests.conftest import SMSGW


def _newer_store(tmp_path: Path) -> tuple[Path, int]:
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["init", "--data-dir", str(tmp_path)]) == 0
    newer = len(MIGRATIONS) + 3
    conn = sqlite3.connect(tmp_path / "smsgw.db")
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()
    return tmp_path / "smsgw.toml", newer


def test_run_refuses_a_newer_store_naming_both_versions(tmp_path: Path) -> None:
    conf, newer = _newer_store(tmp_path)
    done = subprocess.run(
        [*SMSGW, "run", "--config", str(conf)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.strip()]
    assert f"schema version {newer}" in line
    assert f"({len(MIGRATIONS)})" in line and "newer than this smsgw" in line
    assert "Traceback" not in done.stderr
    conn = sqlite3.connect(tmp_path / "smsgw.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == newer  # left as it was
    conn.close()


def test_doctor_names_both_versions_of_a_newer_store(tmp_path: Path) -> None:
    conf, newer = _newer_store(tmp_path)
    # A child process, as tests/test_doctor.py does: doctor sets the process's log level.
    done = subprocess.run(
        [*SMSGW, "doctor", "--config", str(conf), "--wait", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("store:")]
    assert f"schema version {newer}" in line and f"({len(MIGRATIONS)})" in line
