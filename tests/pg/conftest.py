"""One PostgreSQL cluster for every test under tests/pg/ (one xdist worker runs them all,
see ONE_WORKER in tests/conftest.py), and a fresh database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

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
def pg_dsn(pg_server: PgServer) -> str:
    return pg_server.create_database()


@pytest.fixture
async def pool(pg_dsn: str) -> AsyncIterator[Pool]:
    """A pool on a fresh database with the cluster schema applied."""
    async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=12, open=False) as p:
        async with p.connection() as conn:
            await migrate(conn)
        yield p
