"""Reads: a small pool of read-only connections, each read whole in one call.

Why not one shared connection: in WAL mode a connection's read transaction lasts while
any of its statements is unfinished, and its snapshot is the one taken when that
transaction began. With one connection serving every reader, the cursors of concurrent
requests overlap (execute, then fetch in a later hop), so the transaction never ends
and a message committed a moment ago reads back as missing (issue 10).

Here a read is one function run on one pooled connection on a worker thread: it
executes, fetches every row and closes its cursor before the call returns, so no
transaction outlives the call and a read that starts after a commit sees it. Reads
still run side by side (one per connection) and never wait for the writer.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
DEFAULT_SIZE = 4


class Rows:
    """Rows already read, behind the cursor methods callers used before the pool."""

    def __init__(self, rows: list[sqlite3.Row]) -> None:
        self._rows = rows
        self._next = 0

    async def fetchone(self) -> sqlite3.Row | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    async def fetchmany(self, size: int) -> list[sqlite3.Row]:
        start, self._next = self._next, min(len(self._rows), self._next + size)
        return self._rows[start : self._next]

    async def fetchall(self) -> list[sqlite3.Row]:
        return await self.fetchmany(len(self._rows))

    async def close(self) -> None:
        """Nothing to release: the statement ended before these rows were handed over."""


class ReadPool:
    def __init__(self, path: Path, size: int = DEFAULT_SIZE) -> None:
        self._path = path
        self._size = size
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []
        self._executor: ThreadPoolExecutor | None = None

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(self._size, thread_name_prefix="smsgw-db-reader")
        for _ in range(self._size):
            conn = await asyncio.get_running_loop().run_in_executor(self._executor, self._connect)
            self._all.append(conn)
            self._idle.put(conn)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.row_factory = sqlite3.Row
        return conn

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        executor.shutdown(wait=True)
        for conn in self._all:
            conn.close()
        self._all.clear()

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on a pooled connection; it must read everything it needs before
        returning (every cursor exhausted or closed)."""
        if self._executor is None:
            raise RuntimeError("the store is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        # As many connections as threads: a worker never waits here.
        conn = self._idle.get()
        try:
            return fn(conn)
        finally:
            self._idle.put(conn)

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self.run(lambda conn: _fetch_all(conn, sql, params))

    async def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        return await self.run(lambda conn: _fetch_one(conn, sql, params))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """The whole result of `sql`, read at once (for callers written against a cursor)."""
        return Rows(await self.all(sql, params))


def _fetch_all(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
    cur = conn.execute(sql, params)
    try:
        return cur.fetchall()
    finally:
        cur.close()


def _fetch_one(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> sqlite3.Row | None:
    cur = conn.execute(sql, params)
    try:
        row: sqlite3.Row | None = cur.fetchone()
        return row
    finally:
        cur.close()  # resets the statement: its read transaction ends here
