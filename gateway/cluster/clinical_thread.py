"""A keyed clinical job (an HL7 message's) on a synchronous psycopg connection of its
own thread, not over the loop's connection (`clinical_db.Bridge`).

Over the bridge each of a job's ~20 statements waited for the event loop twice (to
send, then to resume with the rows): on a busy node 7 ms a statement, some 150 ms of a
job's 175, with 2.4 ms of its own CPU (bench/README.md, "HL7 over MLLP into nodes").
Here the thread sends each statement itself and the loop only waits for the job's end.

Each worker thread keeps one connection (opened on its first job, dropped once
broken); the workers are this module's own, as many as the connections, so a job
waiting for a key's lock never holds a thread the rest of the node needs. The job's
transaction, its locks and its statements are all on that connection: the lock's
guarantees are PostgreSQL's, whichever connection or node takes them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import psycopg

from gateway.cluster.checked import CheckedConnection
from gateway.cluster.clinical_db import CLINICAL_LOCK, KEY_SPACE, BridgedCursor, statement

T = TypeVar("T")


class ThreadConnection:
    """A DB-API shaped connection over the worker's own psycopg connection, inside the
    job's transaction."""

    def __init__(self, conn: psycopg.Connection[Any], abandoned: threading.Event) -> None:
        self._conn = conn
        self.abandoned = abandoned  # set: the job was cancelled, its transaction goes

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> BridgedCursor:
        if self.abandoned.is_set():
            raise RuntimeError("the clinical job was abandoned")
        cur = self._conn.execute(*statement(sql, params))
        rows = cur.fetchall() if cur.description is not None else []
        return BridgedCursor(rows, cur.rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        for params in rows:
            self.execute(sql, params)

    def within_shared(self, work: object) -> None:
        """Not here: a job that accepts a message (a survey's) runs over the bridge."""
        raise RuntimeError("a keyed clinical job cannot accept a message")


class ClinicalThreads:
    """The worker threads and their connections for keyed clinical jobs."""

    def __init__(self, conninfo: str, size: int) -> None:
        self._conninfo = conninfo
        self._executor = ThreadPoolExecutor(size, thread_name_prefix="clinical")
        self._local = threading.local()
        self._opened: list[psycopg.Connection[Any]] = []
        self._guard = threading.Lock()

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            old, conn = (
                conn,
                CheckedConnection.connect(self._conninfo, autocommit=True, connect_timeout=10),
            )
            self._local.conn = conn
            with self._guard:
                self._opened = [c for c in self._opened if c is not old] + [conn]
        return conn

    def _job(
        self,
        job: Callable[[sqlite3.Connection], T],
        numbers: Sequence[int],
        abandoned: threading.Event,
    ) -> T:
        conn = self._connection()
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (CLINICAL_LOCK,))
                for number in numbers:
                    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (KEY_SPACE, number))
                # Typed for sqlite3's connection, as over the bridge.
                return job(cast(sqlite3.Connection, ThreadConnection(conn, abandoned)))
        finally:
            if conn.broken:  # the next job opens another
                conn.close()

    async def run(self, job: Callable[[sqlite3.Connection], T], numbers: Sequence[int]) -> T:
        """`job` in a transaction of its own, under the keys' locks (`numbers`, sorted).

        Cancelled, it waits for the thread, the job told to stop at its next statement
        (rolled back), so that nothing runs once the node has closed these."""
        abandoned = threading.Event()
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._executor, self._job, job, numbers, abandoned)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            abandoned.set()
            await asyncio.wait({done})
            if not done.cancelled():
                done.exception()  # retrieved: never "exception was never retrieved"
            raise

    def close(self) -> None:
        """After the last job (blocking: from a thread)."""
        self._executor.shutdown(wait=True)
        with self._guard:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()
