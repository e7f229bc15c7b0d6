"""WAL checkpoints on a thread of their own (issue 16, point 3): commits never wait for
one, the WAL restarts and stays bounded under commits that never pause, and what was
committed survives the checkpoints and a reopen."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import threading
from pathlib import Path

import pytest

from gateway.store import writer as writer_mod
from gateway.store.checkpointer import Checkpointer
from gateway.store.writer import GroupCommitWriter

WAIT = 10.0  # seconds any one step may take before the test fails
FRAMES = 20  # a small interval, so that a few commits cross it
REPO = Path(__file__).resolve().parent.parent


def _insert(conn: sqlite3.Connection, items: list[bytes]) -> list[None]:
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in items])
    return [None] * len(items)


async def _writer(path: Path, frames: int = FRAMES) -> GroupCommitWriter:
    w = GroupCommitWriter(path, checkpoint_frames=frames)
    await w.open()
    await w.call_outside_transaction(lambda c: c.execute("CREATE TABLE t (v BLOB)"))
    return w


def _row() -> bytes:
    return os.urandom(600)  # a few rows per 2 KiB page: each commit dirties new pages


async def test_the_writer_leaves_checkpoints_to_the_checkpoint_thread(tmp_path: Path) -> None:
    w = await _writer(tmp_path / "w.db")
    try:
        auto = await w.call_outside_transaction(
            lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        limit = await w.call_outside_transaction(
            lambda c: c.execute("PRAGMA journal_size_limit").fetchone()[0]
        )
    finally:
        await w.close()
    assert w.checkpointer is not None
    assert auto == 0
    assert limit == 3 * FRAMES * (writer_mod.PAGE_SIZE + 24)


async def test_commits_go_on_while_a_checkpoint_runs(tmp_path: Path) -> None:
    w = await _writer(tmp_path / "w.db")
    checkpointer = w.checkpointer
    assert checkpointer is not None
    started, release = threading.Event(), threading.Event()
    real = checkpointer._checkpoint

    def held(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(WAIT)  # the checkpoint thread is busy until the test lets it go
        real(conn)

    checkpointer._checkpoint = held  # type: ignore[method-assign]
    try:
        while not started.is_set():
            await w.run_grouped(_insert, _row())
        during = [await w.run_grouped(_insert, _row()) for _ in range(30)]
        assert during == [None] * 30  # each committed while the checkpoint was held
        assert not release.is_set()
        release.set()
        await asyncio.wait_for(checkpointer.idle(), WAIT)
        assert checkpointer.checkpoints == 1
        counts = checkpointer.frames_now()
        assert counts is not None and counts[1] > 0  # frames were copied into the file
    finally:
        release.set()
        await w.close()


async def test_the_wal_restarts_and_stays_bounded_under_commits_that_never_pause(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.db"
    w = await _writer(path)
    checkpointer = w.checkpointer
    assert checkpointer is not None
    longest = restarts = 0
    last = 0
    written: list[bytes] = []
    try:
        for _ in range(60):
            rows = [_row() for _ in range(8)]
            written += rows
            # Eight callers at once: one transaction, and the next one queued behind it.
            await asyncio.gather(*(w.run_grouped(_insert, r) for r in rows))
            counts = checkpointer.frames_now()
            assert counts is not None
            longest = max(longest, counts[0])
            restarts += counts[0] < last
            last = counts[0]
    finally:
        await w.close()
    assert checkpointer.checkpoints >= 2
    assert restarts >= 2  # the WAL went back to its beginning, more than once
    assert longest <= 4 * FRAMES + 40  # about twice the interval, and one commit more
    conn = sqlite3.connect(path)
    try:
        got = sorted(r[0] for r in conn.execute("SELECT v FROM t"))
    finally:
        conn.close()
    assert got == sorted(written)


async def test_without_a_readable_wal_index_the_writer_checkpoints_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback: SQLite's own checkpoint in the writer, as before the thread."""
    monkeypatch.setattr(Checkpointer, "open", lambda self: False)
    w = await _writer(tmp_path / "w.db")
    try:
        auto = await w.call_outside_transaction(
            lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
    finally:
        await w.close()
    assert w.checkpointer is None
    assert auto == writer_mod.WAL_AUTOCHECKPOINT


CHILD = """
import asyncio, os, sqlite3, sys
from pathlib import Path
from gateway.store.writer import GroupCommitWriter

def insert(conn, items):
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in items])
    return [None] * len(items)

async def main():
    w = GroupCommitWriter(Path(sys.argv[1]), checkpoint_frames=20)
    await w.open()
    await w.call_outside_transaction(lambda c: c.execute("CREATE TABLE t (v BLOB)"))
    real = w.checkpointer._checkpoint
    def announced(conn):
        os.write(1, b"checkpoint\\n")  # one write: lines of two threads never mix
        real(conn)
    w.checkpointer._checkpoint = announced
    acked = 0
    while True:
        await asyncio.gather(*(w.run_grouped(insert, os.urandom(600)) for _ in range(4)))
        acked += 4
        os.write(1, b"acked %d\\n" % acked)

asyncio.run(main())
"""


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


async def test_what_was_committed_survives_a_kill_9_during_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    errors = await asyncio.to_thread(open, tmp_path / "child.err", "wb")
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=errors,
        cwd=REPO,
    )
    assert child.stdout is not None
    acked = checkpoints = 0
    try:
        while checkpoints < 3:  # killed as its third checkpoint starts
            line = (await asyncio.wait_for(child.stdout.readline(), WAIT)).decode().split()
            assert line, f"the child ended early: {_tail(tmp_path / 'child.err')}"
            if line[0] == "acked":
                acked = int(line[1])
            else:
                checkpoints += 1
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
        errors.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] >= acked > 0
    finally:
        conn.close()


async def test_a_truncating_checkpoint_waits_for_the_thread_and_empties_the_wal(
    tmp_path: Path,
) -> None:
    """Retention's erase ends with `wal_checkpoint(TRUNCATE)` so that no removed value
    stays in the WAL; one that met the thread's checkpoint would find it busy."""
    path = tmp_path / "w.db"
    w = await _writer(path)
    checkpointer = w.checkpointer
    assert checkpointer is not None
    started, release = threading.Event(), threading.Event()
    order: list[str] = []
    real = checkpointer._checkpoint

    def held(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(WAIT)
        real(conn)
        order.append("thread")

    def truncate(conn: sqlite3.Connection) -> list[tuple[int, int, int]]:
        order.append("truncate")
        return conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    checkpointer._checkpoint = held  # type: ignore[method-assign]
    try:
        while not started.is_set():
            await w.run_grouped(_insert, _row())
        erase = asyncio.ensure_future(w.call_outside_transaction(truncate))
        await w.run_grouped(_insert, _row())  # commits go on meanwhile
        release.set()
        ((busy, _, _),) = await asyncio.wait_for(erase, WAIT)
        wal_bytes = (await asyncio.to_thread(os.stat, f"{path}-wal")).st_size
    finally:
        release.set()
        await w.close()
    assert order == ["thread", "truncate"]
    assert busy == 0 and wal_bytes == 0


async def test_the_thread_syncs_the_database_file_after_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite syncs the file only after a checkpoint that copied the whole WAL; under
    steady commits that sync would fall to the writer's tail, in the committing thread."""
    path = tmp_path / "w.db"
    synced: list[str] = []
    real_sync = os.fdatasync

    def recorded(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_sync(fd)

    monkeypatch.setattr(os, "fdatasync", recorded)
    w = await _writer(path)
    checkpointer = w.checkpointer
    assert checkpointer is not None
    try:
        while checkpointer.checkpoints < 1:
            await w.run_grouped(_insert, _row())
            await checkpointer.idle()
    finally:
        await w.close()
    assert str(path) in synced
