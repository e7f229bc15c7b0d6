"""The writer's lane for bulk work (`run_after_others`): a campaign's pass runs in a
transaction of its own, after interactive work pending, and is never held back for more
than one transaction. Real SQLite on a temp file; the writer thread is held by a job
that waits on an event, so what piles up meanwhile is known."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.store.writer import GroupCommitWriter

WAIT_S = 10.0


class Rig:
    def __init__(self, writer: GroupCommitWriter) -> None:
        self.writer = writer
        self.ran: list[tuple[str, int]] = []  # (job, the transaction it ran in)

    def job(self, name: str, hold: threading.Event | None = None) -> Callable[..., None]:
        started = threading.Event()

        def run(conn: sqlite3.Connection) -> None:
            self.ran.append((name, self.writer.batches))  # transactions settled before it
            conn.execute("INSERT INTO t VALUES (?)", (name,))
            started.set()
            if hold is not None:
                hold.wait(WAIT_S)

        run.started = started  # type: ignore[attr-defined]  # for `running`
        return run

    async def running(self, job: Callable[..., None]) -> None:
        started: threading.Event = job.started  # type: ignore[attr-defined]
        assert await asyncio.to_thread(started.wait, WAIT_S)


async def _rig(tmp_path: Path) -> Rig:
    writer = GroupCommitWriter(tmp_path / "lanes.db")
    await writer.open()
    await writer.call_outside_transaction(lambda c: c.execute("CREATE TABLE t (what TEXT)"))
    return Rig(writer)


async def test_bulk_work_goes_after_the_interactive_work_and_alone(tmp_path: Path) -> None:
    rig = await _rig(tmp_path)
    writer, hold = rig.writer, threading.Event()
    busy = rig.job("busy", hold)
    futures = [writer.run(busy)]
    await rig.running(busy)
    futures.append(writer.run_after_others(rig.job("pass")))
    futures += [writer.run(rig.job("accept")), writer.run(rig.job("claim"))]
    hold.set()
    await asyncio.gather(*futures)
    transactions = dict(rig.ran)
    assert [name for name, _ in rig.ran] == ["busy", "accept", "claim", "pass"]
    assert transactions["accept"] == transactions["claim"] < transactions["pass"]
    await writer.close()


async def test_bulk_work_waits_for_one_transaction_at_most(tmp_path: Path) -> None:
    """Under a steady stream of interactive work, the campaign still moves."""
    rig = await _rig(tmp_path)
    writer, hold, hold_accept = rig.writer, threading.Event(), threading.Event()
    busy, accept = rig.job("busy", hold), rig.job("accept", hold_accept)
    futures = [writer.run(busy)]
    await rig.running(busy)
    futures += [writer.run_after_others(rig.job("pass")), writer.run(accept)]
    hold.set()
    await rig.running(accept)
    futures.append(writer.run(rig.job("claim")))  # arrives while the accept commits
    hold_accept.set()
    await asyncio.gather(*futures)
    assert [name for name, _ in rig.ran] == ["busy", "accept", "pass", "claim"]
    assert len({tx for _, tx in rig.ran}) == 4
    rows = await writer.call_outside_transaction(
        lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]
    )
    assert rows == 4
    await writer.close()


async def test_bulk_work_alone_goes_at_once_and_a_failed_one_changes_nothing(
    tmp_path: Path,
) -> None:
    rig = await _rig(tmp_path)
    writer = rig.writer

    def failing(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES ('half a pass')")
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        await writer.run_after_others(failing)
    await writer.run_after_others(rig.job("pass"))
    rows = await writer.call_outside_transaction(
        lambda c: [r[0] for r in c.execute("SELECT what FROM t")]
    )
    assert rows == ["pass"]
    await writer.drain()
    await writer.close()
