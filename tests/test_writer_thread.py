"""The writer's own thread: every call on the one thread, in the order handed in, each
outcome (a result or what it raised) back to its caller on the loop; closing it, or an
open that fails, leaves no thread behind. Real SQLite on a temp file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.store.writer import GroupCommitWriter

THREAD = "smsgw-db-writer"


def _writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD]


async def test_calls_run_on_one_thread_in_order_and_their_errors_reach_the_caller(
    tmp_path: Path,
) -> None:
    before = len(_writer_threads())
    w = GroupCommitWriter(tmp_path / "w.db")
    await w.open()
    try:
        assert len(_writer_threads()) == before + 1
        await w.run(lambda c: c.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)"))
        names: list[str] = []

        def insert(v: int) -> Callable[[sqlite3.Connection], int]:
            def job(c: sqlite3.Connection) -> int:
                names.append(threading.current_thread().name)
                c.execute("INSERT INTO t VALUES (?)", (v,))
                return v

            return job

        first = w.run(insert(1))
        await asyncio.sleep(0)  # its transaction is in flight ...
        later = [w.run(insert(v)) for v in (2, 3)]
        duplicate = w.run(insert(2))  # fails alone
        assert await first == 1
        assert await asyncio.gather(*later) == [2, 3]
        with pytest.raises(sqlite3.IntegrityError):
            await duplicate
        assert set(names) == {THREAD}
        rows = await w.call_outside_transaction(
            lambda c: [r[0] for r in c.execute("SELECT v FROM t ORDER BY rowid")]
        )
        assert rows == [1, 2, 3]

        def broken(_c: sqlite3.Connection) -> None:
            raise LookupError("raised on the writer's thread")

        with pytest.raises(LookupError, match="writer's thread"):
            await w.call_outside_transaction(broken)
    finally:
        await w.close()
    assert len(_writer_threads()) == before


async def test_an_open_that_fails_leaves_no_thread(tmp_path: Path) -> None:
    before = len(_writer_threads())
    w = GroupCommitWriter(tmp_path / "missing" / "w.db")  # no such directory
    with pytest.raises(sqlite3.OperationalError):
        await w.open()
    assert len(_writer_threads()) == before
