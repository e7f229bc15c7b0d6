"""A transaction block whose connection was lost before its COMMIT raises (S8).

psycopg itself ends such a block silently, as if it had committed: the first test
shows that on a plain connection, so the second one is known to test the difference.
A COMMIT sent whose answer never came raises `CommitUnanswered` (its outcome unknown)."""

from __future__ import annotations

import contextlib
import select
import time
from typing import Any

import psycopg
import pytest

from gateway.cluster.checked import CheckedAsyncConnection, CheckedConnection, CommitUnanswered
from gateway.store_failure import outcome_unknown

WAIT = 10.0  # an upper bound, never an expected duration


async def _lost_before_commit(conn: psycopg.AsyncConnection[Any], pg_dsn: str) -> None:
    """The server ends the session after the block's statements, and the client reads
    that before its COMMIT (as a node's does when its primary dies under load)."""
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
    _read_until_bad(conn.pgconn)


def _read_until_bad(pgconn: Any) -> None:
    """libpq reads the server's goodbye, then the closed socket: the status is BAD."""
    deadline = time.monotonic() + WAIT
    while pgconn.status != psycopg.pq.ConnStatus.BAD:
        assert time.monotonic() < deadline, "the server never closed the session"
        select.select([pgconn.socket], [], [], 0.5)
        with contextlib.suppress(psycopg.OperationalError):
            pgconn.consume_input()


async def test_psycopg_ends_such_a_block_silently(pg_dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        async with conn.transaction() as tx:
            await conn.execute("CREATE TABLE t (x int)")
            await _lost_before_commit(conn, pg_dsn)
        assert tx.status is tx.Status.FAILED  # and nothing was raised


async def _create_table_losing_the_connection(
    conn: psycopg.AsyncConnection[Any], pg_dsn: str
) -> None:
    async with conn.transaction():
        await conn.execute("CREATE TABLE t (x int)")
        await _lost_before_commit(conn, pg_dsn)


async def test_a_checked_connection_raises_there_and_nothing_is_committed(pg_dsn: str) -> None:
    conn = await CheckedAsyncConnection.connect(pg_dsn, autocommit=True)
    try:
        with pytest.raises(psycopg.OperationalError, match="did not commit"):
            await _create_table_losing_the_connection(conn, pg_dsn)
    finally:
        await conn.close()
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as check:
        found = await (await check.execute("SELECT to_regclass('t')")).fetchone()
    assert found == (None,)


async def test_a_commit_sent_on_a_lost_connection_raises_its_outcome_unknown(
    pg_dsn: str,
) -> None:
    """The server ended the session, unread by the client, which then sends its COMMIT:
    from the client's side the COMMIT went out and no answer came back."""
    conn = await CheckedAsyncConnection.connect(pg_dsn, autocommit=True)
    try:
        with pytest.raises(CommitUnanswered) as raised:
            await _create_table_ending_the_session_unread(conn, pg_dsn)
        assert outcome_unknown(raised.value)
    finally:
        await conn.close()


async def _create_table_ending_the_session_unread(
    conn: psycopg.AsyncConnection[Any], pg_dsn: str
) -> None:
    async with conn.transaction():
        await conn.execute("CREATE TABLE t (x int)")
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))


def _create_table_losing_the_connection_sync(conn: psycopg.Connection[Any], pg_dsn: str) -> None:
    with conn.transaction():
        conn.execute("CREATE TABLE t (x int)")
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        _read_until_bad(conn.pgconn)


def test_the_clinical_threads_connection_raises_there_too(pg_dsn: str) -> None:
    conn = CheckedConnection.connect(pg_dsn, autocommit=True)
    try:
        with pytest.raises(psycopg.OperationalError, match="did not commit"):
            _create_table_losing_the_connection_sync(conn, pg_dsn)
    finally:
        conn.close()
