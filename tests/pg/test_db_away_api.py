"""The shared database away (a failover, S8) is the store unavailable, not a bug: a node
whose PostgreSQL link is cut answers its API's reads and writes `503 store_unavailable`
with `Retry-After` (never `500 internal`), and 200 again once the link is back. It
answers promptly: a request waits for a connection at most `cluster.request_timeout`,
and not at all once the node knows the database is away (`cluster/db_breaker.py`).

Real parts: one node serving its API on loopback, its pool talking to the suite's
PostgreSQL through a proxy the test cuts (every connection closed, new ones held as a
dead primary's are: `cut_proxy.py`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from structlog.testing import capture_logs

from drivers.clock import FakeClock
from gateway.config import from_mapping
from gateway.tokens import create_token
from tests.conftest import CANARY_NUMBER, LOOPBACK_TEST
from tests.pg.cut_proxy import CutProxy
from tests.pg.test_consent_cluster import CAPS
from tests.pg.two_nodes import in_process_nodes
from tests.test_api import Api, _error, start_client

BACK_WITHIN = 20.0  # generous: the pool reconnects within `reconnect_max_delay` (3 s) of the heal
REQUEST_TIMEOUT = 1.5  # `cluster.request_timeout` of the fail-fast test
# Far under the pool's 30 s, far over the bound: a busy machine answers well within it.
ANSWERED_WITHIN = 12.0


def node_config(data: Path, name: str, dsn: str, **cluster: Any) -> Any:
    data.mkdir(exist_ok=True)
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "http": {"shutdown_grace": 1.0},
            "consent": CAPS,
            "source": str(data / "smsgw.toml"),
            # A fake clock never renews the lease: long enough for the test.
            "cluster": {
                "enabled": True,
                "node_id": name,
                "conninfo": dsn,
                "lease_seconds": 600,
                **cluster,
            },
        }
    )


@pytest.fixture
async def api(tmp_path: Path, clock: FakeClock, pg_dsn: str) -> AsyncIterator[tuple[Api, CutProxy]]:
    # A request waits this long for a connection the pool cannot make.
    async with _node_api(tmp_path, clock, pg_dsn, request_timeout=1.0) as served:
        yield served


@pytest.fixture
async def fast_api(
    tmp_path: Path, clock: FakeClock, pg_dsn: str
) -> AsyncIterator[tuple[Api, CutProxy]]:
    async with _node_api(tmp_path, clock, pg_dsn, request_timeout=REQUEST_TIMEOUT) as served:
        yield served


@contextlib.asynccontextmanager
async def _node_api(
    tmp_path: Path, clock: FakeClock, pg_dsn: str, **cluster: Any
) -> AsyncIterator[tuple[Api, CutProxy]]:
    """One node serving its API, its database link through a proxy the test cuts (the
    pool's own wait for a connection stays its default, 30 s)."""
    proxy = CutProxy(int(conninfo_to_dict(pg_dsn)["port"]))  # type: ignore[arg-type]
    await proxy.start()
    dsn = make_conninfo(pg_dsn, port=proxy.port, connect_timeout=1)
    try:
        async with in_process_nodes(
            tmp_path, clock, lambda d, n: node_config(d, n, dsn, **cluster), ("gw1",)
        ) as (gw,):
            assert gw.cluster is not None
            scopes = frozenset({"send", "read", "consent"})
            token = await create_token(gw.store, "t", scopes, clock)
            await gw.cluster.tokens.copy_local(gw.store.reader)
            client = await start_client(gw)
            try:
                yield Api(gw, client, token.text), proxy
            finally:
                await client.close()
    finally:
        await proxy.stop()


async def _answers(api: Api) -> list[Any]:
    read = await api.get("/api/v1/messages")
    write = await api.post("/api/v1/optouts", {"number": CANARY_NUMBER})
    return [read, write]


async def test_api_answers_503_store_unavailable_while_the_database_is_away(
    api: tuple[Api, CutProxy],
) -> None:
    client, proxy = api
    assert [r.status for r in await _answers(client)] == [200, 201]

    proxy.cut()
    with capture_logs() as logs:
        away = await _answers(client)
    for r in away:
        error = await _error(r, 503, "store_unavailable")
        assert CANARY_NUMBER not in error["message"]
        assert r.headers["Retry-After"] == "2"
    assert not [e for e in logs if e["event"] == "unhandled_error"], logs
    reasons = {e["reason"] for e in logs if e["event"] == "store_unavailable"}
    assert reasons and all(CANARY_NUMBER not in r for r in reasons), reasons

    proxy.heal()

    async def back() -> None:
        assert client.gw.cluster is not None
        while True:
            await client.gw.cluster.breaker.reachable.wait()  # the pool connects again
            if [r.status for r in await _answers(client)] == [200, 201]:
                return

    await asyncio.wait_for(back(), BACK_WITHIN)


SEND = {"to": CANARY_NUMBER, "body": "Your appointment is tomorrow", "purpose": "informational"}


async def _sent_503_within_bound(api: Api) -> dict[str, Any]:
    started = time.monotonic()
    r = await api.post("/api/v1/messages", SEND)
    answered_in = time.monotonic() - started
    error = await _error(r, 503, "store_unavailable")
    assert r.headers["Retry-After"] == "2"
    assert CANARY_NUMBER not in error["message"]
    assert "nothing was accepted" in error["message"]  # refused before its COMMIT
    assert answered_in < ANSWERED_WITHIN, answered_in  # not the pool's 30 s
    return error


async def test_a_send_answers_503_promptly_while_the_database_is_away_then_202(
    fast_api: tuple[Api, CutProxy],
) -> None:
    """S8 seen by a hospital system: during a failover a send is refused within
    `cluster.request_timeout` (once the node knows the database is away, at once), with
    nothing accepted; after the heal the same send is accepted."""
    api, proxy = fast_api
    assert api.gw.cluster is not None
    breaker = api.gw.cluster.breaker
    assert (await api.post("/api/v1/messages", SEND)).status == 202
    before = await _shared_count(api)

    proxy.cut()
    with capture_logs() as logs:
        # The pool's connections die under the first statement: the node knows now.
        await _sent_503_within_bound(api)
        assert breaker.away
        await _sent_503_within_bound(api)  # refused before any statement
        # A request meeting no connection while the node does not know yet (a dead
        # primary's silence): it waits `request_timeout`, not the pool's 30 s.
        breaker.answered()
        await _sent_503_within_bound(api)
        assert breaker.away
    # What the node learnt: a connection lost under a statement, then no connection.
    reasons = [e["reason"] for e in logs if e["event"] == "database_unreachable"]
    assert len(reasons) == 2 and reasons[-1] == "PoolTimeout", reasons
    assert not [e for e in logs if e["event"] == "unhandled_error"], logs

    proxy.heal()

    async def accepted() -> None:
        while True:
            await breaker.reachable.wait()  # the pool made a connection again
            r = await api.post("/api/v1/messages", SEND)
            if r.status == 202:
                return
            await _error(r, 503, "store_unavailable")

    await asyncio.wait_for(accepted(), BACK_WITHIN)
    assert await _shared_count(api) == before + 1  # no 503 left a message behind


async def _shared_count(api: Api) -> int:
    assert api.gw.cluster is not None
    async with api.gw.cluster.pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) FROM messages")).fetchone()
    assert row is not None
    return int(row[0])
