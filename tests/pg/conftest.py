"""One PostgreSQL cluster per xdist worker for the tests under tests/pg/ (they run in two
units, see ONE_WORKER and PG_NODES in tests/scheduling.py), and a fresh database per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.cluster.lease import Pool
from gateway.cluster.schema import migrate
from tests.pg_server import SKIP_REASON, PgServer, find_bindir


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(SKIP_REASON)
    server = PgServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_dsn(request: pytest.FixtureRequest, pg_server: PgServer) -> str:
    """This test's database: empty, or, when the test has a `pool` (which applies the
    cluster schema before the test starts anyway), a copy of `migrated_template`."""
    if "pool" in request.fixturenames:
        return pg_server.create_database(template=request.getfixturevalue("migrated_template"))
    return pg_server.create_database()


@pytest.fixture(scope="session")
def migrated_template(pg_server: PgServer) -> str:
    """The name of a database with the cluster schema applied, never connected to again:
    `migrated_dsn` and a pooled `pg_dsn` copy it. Migrating took a second a test; a copy
    (CREATE DATABASE ... TEMPLATE) is the same database for a tenth of that."""
    dsn = pg_server.create_database()

    async def apply() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await migrate(conn)

    # On a thread of its own: an async fixture may ask for it inside the test's loop.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, apply()).result(timeout=60)
    return dsn.rsplit("dbname=", 1)[1]


@pytest.fixture
def migrated_dsn(pg_server: PgServer, migrated_template: str) -> str:
    """A fresh database with the cluster schema applied (`migrate` on it finds nothing to
    do), for fixtures that migrate the database they are given; tests of the migrations
    themselves, or of a node migrating an empty database at start, take `pg_dsn`."""
    return pg_server.create_database(template=migrated_template)


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[Pool]:
    """A pool on a fresh database with the cluster schema applied."""
    async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=12, open=False) as p:
        async with p.connection() as conn:
            await migrate(conn)
        yield p


@pytest.fixture
async def held_horizon(pg_dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A report left open in REPEATABLE READ (S9): VACUUM may remove nothing it could see."""
    async with await psycopg.AsyncConnection.connect(pg_dsn) as report:
        await report.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        await report.execute("SELECT count(*) FROM messages")
        yield report
