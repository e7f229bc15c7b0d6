"""The writer's first step of a transaction runs without a savepoint of its own (SQLite's
cost per trigger-firing statement inside a savepoint grows with what the savepoint has
kept), and still fails alone: rolled back with its transaction, which begins again for
the steps after it. Real SQLite on a temp file; the statements the writer's connection
ran are read from its trace."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store.writer import GroupCommitWriter


class Rig:
    def __init__(self, writer: GroupCommitWriter) -> None:
        self.writer = writer
        self.trace: list[str] = []

    async def traced(self) -> None:
        await self.writer.call_outside_transaction(
            lambda c: c.set_trace_callback(self.trace.append)
        )

    async def rows(self) -> list[str]:
        return await self.writer.call_outside_transaction(
            lambda c: [r[0] for r in c.execute("SELECT what FROM t ORDER BY what")]
        )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    writer = GroupCommitWriter(tmp_path / "first.db")
    await writer.open()
    await writer.call_outside_transaction(
        lambda c: c.executescript(
            "CREATE TABLE t (what TEXT PRIMARY KEY);"
            "CREATE TABLE seen (what TEXT);"
            # A trigger: each insert keeps a statement journal, as a message's does.
            "CREATE TRIGGER t_seen AFTER INSERT ON t BEGIN"
            " INSERT INTO seen VALUES (NEW.what); END;"
        )
    )
    yield Rig(writer)
    await writer.close()


def insert_each(conn: sqlite3.Connection, names: list[str]) -> list[str]:
    for name in names:
        conn.execute("INSERT INTO t VALUES (?)", (name,))
    return names


def insert_other(conn: sqlite3.Connection, names: list[str]) -> list[str]:
    return insert_each(conn, names)


async def test_the_first_group_runs_bare_and_a_later_one_in_its_savepoint(rig: Rig) -> None:
    await rig.traced()
    first = rig.writer.run_grouped(insert_each, "a")
    also = rig.writer.run_grouped(insert_each, "b")
    later = rig.writer.run_grouped(insert_other, "c")
    assert await asyncio.gather(first, also, later) == ["a", "b", "c"]
    # Each statement once (the trace repeats one for each trigger step it runs).
    ran = [s for i, s in enumerate(rig.trace) if i == 0 or rig.trace[i - 1] != s]
    assert ran == [
        "BEGIN IMMEDIATE",
        "INSERT INTO t VALUES ('a')",  # the first group: no savepoint
        "INSERT INTO t VALUES ('b')",
        "SAVEPOINT grouped",
        "INSERT INTO t VALUES ('c')",
        "RELEASE grouped",
        "COMMIT",
    ]
    assert await rig.rows() == ["a", "b", "c"]


async def test_a_bad_item_of_the_first_group_fails_alone(rig: Rig) -> None:
    await rig.writer.run_grouped(insert_each, "a")
    results = await asyncio.gather(
        rig.writer.run_grouped(insert_each, "b"),
        rig.writer.run_grouped(insert_each, "a"),  # the primary key refuses it
        rig.writer.run_grouped(insert_each, "c"),
        rig.writer.run_grouped(insert_other, "d"),
        return_exceptions=True,
    )
    assert results[0] == "b"
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert results[2:] == ["c", "d"]
    assert await rig.rows() == ["a", "b", "c", "d"]
    seen = await rig.writer.call_outside_transaction(
        lambda c: sorted(r[0] for r in c.execute("SELECT what FROM seen"))
    )
    assert seen == ["a", "b", "c", "d"]  # the rolled-back attempt left no trigger row


async def test_a_first_job_that_raises_after_writing_changes_nothing(rig: Rig) -> None:
    def writes_then_fails(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES ('half')")
        raise ValueError("changed its mind")

    def writes(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO t VALUES ('whole')")
        return "done"

    results = await asyncio.gather(
        rig.writer.run(writes_then_fails),
        rig.writer.run(writes),
        rig.writer.run_grouped(insert_each, "x"),
        return_exceptions=True,
    )
    assert isinstance(results[0], ValueError)
    assert results[1:] == ["done", "x"]
    assert await rig.rows() == ["whole", "x"]
