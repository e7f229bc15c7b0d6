"""Thread CPU per SQL statement on the gateway's writer connection (bench only).

`install()` wraps the connection `gateway.store.writer.connect` opens for writing in a
proxy that adds each `execute`/`executemany` (and the first `fetchone`/`fetchall` of its
cursor) to a table by statement text: how many rows and how much of the calling thread's
CPU (`time.thread_time`). SQLite releases the GIL while it works, so this is SQLite's
own work plus the module's binding, not the Python around it. `reset()` starts a window;
`top(n)` lists the costliest statements. Used by `profile_dispatch.py --sql`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.store import writer

_STATS: dict[str, list[float]] = {}  # statement (first 100 characters) -> [rows, seconds]


class _Cursor:
    def __init__(self, cursor: sqlite3.Cursor, entry: list[float]) -> None:
        self._cursor, self._entry = cursor, entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    def __iter__(self) -> Any:
        return iter(self._cursor)

    def fetchone(self) -> Any:
        started = time.thread_time()
        row = self._cursor.fetchone()
        self._entry[1] += time.thread_time() - started
        return row

    def fetchall(self) -> list[Any]:
        started = time.thread_time()
        rows = self._cursor.fetchall()
        self._entry[1] += time.thread_time() - started
        return rows


class _Timed:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Cursor:
        entry = _STATS.setdefault(sql[:100], [0, 0.0])
        started = time.thread_time()
        cursor = self._conn.execute(sql, params)
        entry[0] += 1
        entry[1] += time.thread_time() - started
        return _Cursor(cursor, entry)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        rows = list(rows)
        entry = _STATS.setdefault("MANY " + sql[:95], [0, 0.0])
        started = time.thread_time()
        cursor = self._conn.executemany(sql, rows)
        entry[0] += len(rows)
        entry[1] += time.thread_time() - started
        return cursor


def install() -> None:
    """Before the gateway opens its store: time the writer's statements from then on."""
    plain = writer.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        conn = plain(*args, **kwargs)
        return conn if kwargs.get("read_only") else _Timed(conn)

    writer.connect = connect  # type: ignore[assignment]  # the proxy stands in for it


def reset() -> None:
    _STATS.clear()


def top(n: int, per: int) -> list[str]:
    """The `n` statements that took the most CPU, as lines, in µs per `per` (messages)."""
    total = sum(seconds for _, seconds in _STATS.values())
    lines = [f"writer SQL: {total / per * 1e6:.1f} us of thread CPU per message in all"]
    ranked = sorted(_STATS.items(), key=lambda item: -item[1][1])[:n]
    for sql, (rows, seconds) in ranked:
        each = seconds / rows * 1e6 if rows else 0.0
        lines.append(f"{seconds / per * 1e6:7.1f} us/msg {rows / per:5.2f} x {each:6.1f} us  {sql}")
    return lines
