"""Reads: a small pool of read-only connections, each read whole in one call.

Why not one shared connection: in WAL mode a connection's read transaction lasts while
any of its statements is unfinished, and its snapshot is the one taken when that
transaction began. With one connection serving every reader, the cursors of concurrent
requests overlap (execute, then fetch in a later hop), so the transaction never ends
and a message committed a moment ago reads back as missing (issue 10).

Here a read takes a connection from a small pool and executes and fetches every row in
one hop on that connection's thread (`execute_fetchall`): the statement is finished
before the call returns, so no read transaction outlives it and a read that starts
after a commit sees it. Reads still run side by side (one per connection) and never
wait for the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

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
        self._idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all: list[aiosqlite.Connection] = []

    async def open(self) -> None:
        for _ in range(self._size):
            conn = await aiosqlite.connect(self._path, isolation_level=None)
            await conn.execute("PRAGMA query_only = ON")
            conn.row_factory = sqlite3.Row
            self._all.append(conn)
            self._idle.put_nowait(conn)

    async def close(self) -> None:
        conns, self._all = self._all, []
        for conn in conns:
            await conn.close()

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Every row of `sql`: executed and fetched in one hop on one connection, so
        the statement (and its read transaction) ends before this returns."""
        if not self._all:
            raise RuntimeError("the store is closed")
        conn = await self._idle.get()
        try:
            return list(await conn.execute_fetchall(sql, params))
        finally:
            self._idle.put_nowait(conn)

    async def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self.all(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """The whole result of `sql`, read at once (for callers written against a cursor)."""
        return Rows(await self.all(sql, params))
