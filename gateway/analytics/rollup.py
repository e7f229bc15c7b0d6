"""The rollup: folds rows committed since each source's cursor into the daily sums.

Theory of operation. For each source (`streams.STREAMS`) a step reads the cursor and
the next batch of rows after it from a read connection (off the writer: sends never
wait for the reading), counts them in memory, then hands the writer one job that
checks the cursor is still where the batch was read from, adds the counts and moves
the cursor. The job runs in one transaction, so a crash leaves either the whole batch
counted with its cursor moved, or neither; a second rollup racing on the same source
finds the cursor moved and its job changes nothing (`CursorMoved`). Nothing runs on
the send path: no trigger, no write per message; the task wakes every `interval`
seconds and catches up batch by batch.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import structlog

from drivers.clock import Clock
from gateway.analytics.days import LocalDays
from gateway.analytics.figures import BLOCKED, COLUMNS
from gateway.analytics.streams import (
    BATCH,
    KEYS_SQL,
    STREAMS,
    Cursor,
    MessageKeys,
    Stream,
    Sums,
    fold,
    message_ids,
    message_keys,
)
from gateway.logs import exception_summary
from gateway.store.store import Store

log = structlog.get_logger("smsgw.analytics")

_SET = ", ".join(f"{c} = {c} + excluded.{c}" for c in COLUMNS)
UPSERT = (
    f"INSERT INTO analytics_daily (dim, day, key, {', '.join(COLUMNS)})"  # noqa: S608 - fixed
    f" VALUES (?, ?, ?, {', '.join('?' * len(COLUMNS))})"
    f" ON CONFLICT (dim, day, key) DO UPDATE SET {_SET}"
)
UPSERT_BLOCKED = (
    "INSERT INTO analytics_blocked (dim, day, key, reason, value) VALUES (?,?,?,?,?)"
    " ON CONFLICT (dim, day, key, reason) DO UPDATE SET value = value + excluded.value"
)
_COLUMN = {c: i for i, c in enumerate(COLUMNS)}
SAVE_CURSOR = (
    "INSERT INTO analytics_cursors (stream, seq, at, id, rows) VALUES (?,?,?,?,?)"
    " ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq, at = excluded.at,"
    " id = excluded.id, rows = excluded.rows"
)
BACKLOG_PAUSE = 0.05  # seconds between two batches of a backlog
READ_CURSOR = "SELECT seq, at, id, rows FROM analytics_cursors WHERE stream = ?"


class CursorMoved(RuntimeError):
    """Another rollup counted this batch first."""


def read_cursor(conn: sqlite3.Connection, stream: str) -> Cursor:
    row = conn.execute(READ_CURSOR, (stream,)).fetchone()
    return Cursor() if row is None else Cursor(int(row[0]), float(row[1]), str(row[2]), int(row[3]))


def commit_batch(
    conn: sqlite3.Connection, stream: str, before: Cursor, after: Cursor, sums: Sums
) -> None:
    """Add `sums` and move the cursor from `before` to `after`, in the caller's
    transaction; refused if the cursor is no longer at `before`."""
    if read_cursor(conn, stream) != before:
        raise CursorMoved(stream)
    wide: dict[tuple[str, str, str], list[int]] = {}
    blocked = []
    for (dim, day, key, metric), n in sums.items():
        if metric.startswith(BLOCKED):
            blocked.append((dim, day, key, metric.removeprefix(BLOCKED), n))
        else:
            wide.setdefault((dim, day, key), [0] * len(COLUMNS))[_COLUMN[metric]] += n
    conn.executemany(UPSERT, [(*k, *v) for k, v in wide.items()])
    conn.executemany(UPSERT_BLOCKED, blocked)
    conn.execute(SAVE_CURSOR, (stream, after.seq, after.at, after.id, after.rows))


def step_on(conn: sqlite3.Connection, stream: Stream, days: LocalDays, now: float,
            batch: int = BATCH) -> int:  # fmt: skip
    """`Rollup.step` on one connection of the caller's (autocommit mode), reading and
    committing there: for a console run on a stopped gateway, and the benchmark."""
    before = read_cursor(conn, stream.name)
    rows = conn.execute(stream.sql, stream.params(before, now, batch)).fetchall()
    if not rows:
        return 0
    ids = message_ids(stream, rows)
    found = conn.execute(KEYS_SQL, (json.dumps(ids),)).fetchall() if ids else []
    sums, after = fold(stream, rows, {str(r[0]): message_keys(r) for r in found}, days, before)
    conn.execute("BEGIN IMMEDIATE")
    try:
        commit_batch(conn, stream.name, before, after, sums)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(rows)


def catch_up_on(conn: sqlite3.Connection, days: LocalDays, now: float, batch: int = BATCH) -> int:
    """Every source up to `now` on `conn`, batch by batch; the rows counted."""
    total = 0
    for stream in STREAMS:
        while (n := step_on(conn, stream, days, now, batch)) > 0:
            total += n
            if n < batch:
                break
    return total


class Rollup:
    def __init__(
        self, store: Store, clock: Clock, zone: ZoneInfo, *, interval: float = 15.0,
        batch: int = BATCH,
    ) -> None:  # fmt: skip
        self._store = store
        self._clock = clock
        self.days = LocalDays(zone)
        self.interval = interval
        self.batch = batch

    async def cursor(self, stream: str) -> Cursor:
        row = await self._store.reader.one(READ_CURSOR, (stream,))
        if row is None:
            return Cursor()
        return Cursor(int(row[0]), float(row[1]), str(row[2]), int(row[3]))

    async def step(self, stream: Stream) -> int:
        """Count the next batch of `stream`; the rows counted (0: caught up)."""
        before = await self.cursor(stream.name)
        now = self._clock.time()
        rows = await self._store.reader.all(stream.sql, stream.params(before, now, self.batch))
        if not rows:
            return 0
        keys = await self._keys(message_ids(stream, rows))
        sums, after = fold(stream, rows, keys, self.days, before)
        await self._store.writer.run(
            lambda conn: commit_batch(conn, stream.name, before, after, sums)
        )
        return len(rows)

    async def _keys(self, ids: list[str]) -> dict[str, MessageKeys]:
        if not ids:
            return {}
        rows = await self._store.reader.all(KEYS_SQL, (json.dumps(ids),))
        return {str(r[0]): message_keys(r) for r in rows}

    async def catch_up(self, streams: Iterable[Stream] = STREAMS) -> int:
        """Every source up to now, batch by batch; the rows counted."""
        total = 0
        for stream in streams:
            while True:
                n = await self.step(stream)
                total += n
                if n < self.batch:
                    break
        return total

    async def run(self) -> None:
        """One batch of each source per round; rounds follow each other after a short
        pause while a backlog lasts (the first start over years of messages), so the
        counting never holds the event loop for long, else every `interval`."""
        counted = 0
        while True:
            more = False
            try:
                for stream in STREAMS:
                    n = await self.step(stream)
                    counted += n
                    more = more or n >= self.batch
            except CursorMoved:
                more = True  # another rollup (a console run) counted it: read on from there
            except Exception as e:  # the store is failing: next round, not never
                log.error("analytics_rollup_failed", error=exception_summary(e))
            if counted and not more:
                log.info("analytics_counted", rows=counted)
                counted = 0
            await self._clock.sleep(BACKLOG_PAUSE if more else self.interval)
