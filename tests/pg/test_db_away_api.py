"""The shared database away (a failover, S8) is the store unavailable, not a bug: a node
whose PostgreSQL link is cut answers its API's reads and writes `503 store_unavailable`
with `Retry-After` (never `500 internal`), and 200 again once the link is back.

Real parts: one node serving its API on loopback, its pool talking to the suite's
PostgreSQL through a proxy the test cuts (every connection closed, new ones held as a
dead primary's are: `cut_proxy.py`)."""

from __future__ import annotations

import asyncio
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

BACK_WITHIN = 20.0  # the pool reconnects with its backoff after the link heals


def node_config(data: Path, name: str, dsn: str) -> Any:
    data.mkdir(exist_ok=True)
    return from_mapping(
        {
            "data_dir": str(data),
            "routes": [{"name": "main", "type": "loopback", **LOOPBACK_TEST}],
            "http": {"shutdown_grace": 1.0},
            "consent": CAPS,
            "source": str(data / "smsgw.toml"),
            # A fake clock never renews the lease: long enough for the test.
            "cluster": {"enabled": True, "node_id": name, "conninfo": dsn, "lease_seconds": 600},
        }
    )


@pytest.fixture
async def api(tmp_path: Path, clock: FakeClock, pg_dsn: str) -> AsyncIterator[tuple[Api, CutProxy]]:
    proxy = CutProxy(int(conninfo_to_dict(pg_dsn)["port"]))  # type: ignore[arg-type]
    await proxy.start()
    dsn = make_conninfo(pg_dsn, port=proxy.port, connect_timeout=1)
    try:
        async with in_process_nodes(
            tmp_path, clock, lambda d, n: node_config(d, n, dsn), ("gw1",)
        ) as (gw,):
            assert gw.cluster is not None
            # A request waits this long for a connection the pool cannot make (its
            # default, 30 s, is what a request waits during a real failover).
            gw.cluster.pool.timeout = 1.0
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
        while [r.status for r in await _answers(client)] != [200, 201]:
            pass  # each try waits for the pool (at most its timeout): no busy loop

    await asyncio.wait_for(back(), BACK_WITHIN)
