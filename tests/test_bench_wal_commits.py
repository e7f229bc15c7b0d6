"""bench/wal_commits.py's parts (bench/README.md, "Disk writes per message", session
35): a WAL read into commits, named by b-tree, and the copy of a checkout whose writer
never checkpoints by itself. The whole tool runs a real gateway: not run here."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import wal_commits  # noqa: E402 - bench/ is put on the path just above

ROOT = BENCH.parent


def test_a_wal_is_read_as_commits_of_named_btrees(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("CREATE INDEX t_v ON t (v)")
        start = len(wal_commits.wal_frames(Path(f"{db}-wal")))
        for i in range(3):  # three commits, each writing the table and its index
            conn.execute("INSERT INTO t VALUES (?, ?)", (i, f"v{i}"))
        frames = wal_commits.wal_frames(Path(f"{db}-wal"))[start:]
        names = wal_commits.page_names(db)
    finally:
        conn.close()
    assert sum(ends for _, ends in frames) == 3 and frames[-1][1]
    commits = wal_commits.commits_of(frames, names)
    result = wal_commits.summary(commits, per=3)
    assert result["commits"] == 3 and result["commits_per"] == 1.0
    assert {"t", "t_v"} <= set(result["by_btree"])
    assert sum(k["commits"] for k in result["kinds"]) == 3


def test_the_copy_runs_the_writer_without_automatic_checkpoints(tmp_path: Path) -> None:
    copy = wal_commits.copy_without_checkpoints(ROOT, tmp_path / "copy")
    writer = (copy / "gateway" / "store" / "writer.py").read_text()
    assert "\nWAL_AUTOCHECKPOINT = 0\n" in writer
    assert "\nWAL_AUTOCHECKPOINT_QUIET = 0\n" in writer
    assert not (copy / ".git").exists() and not (copy / "tests").exists()
    assert (copy / "drivers").is_dir()


def test_a_writer_it_cannot_patch_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "gateway" / "store").mkdir(parents=True)
    (source / "gateway" / "store" / "writer.py").write_text("WAL_AUTOCHECKPOINT = 1000\n")
    with pytest.raises(SystemExit, match="WAL_AUTOCHECKPOINT_QUIET"):
        wal_commits.copy_without_checkpoints(source, tmp_path / "copy")
