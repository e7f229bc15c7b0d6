"""A node's PostgreSQL sessions end on the server once they sit in a transaction, silent,
for longer than `lease - margin` (gateway/cluster/session.py), so the locks of a node cut
off mid-transaction free before its peers sweep its rows. Here the "cut" node is a
session that takes a row lock and then says nothing; a peer waiting for that row gets
it once the server ends the silent session."""

from __future__ import annotations

import asyncio

import psycopg
import psycopg.errors
import pytest
from psycopg.conninfo import make_conninfo

from gateway.cluster.session import session_options
from gateway.cluster.settings import ClusterConfig


def test_options_keep_those_the_conninfo_sets() -> None:
    settings = ClusterConfig(
        enabled=True, node_id="gw1", conninfo="host=db options='-c work_mem=8MB'",
        lease_seconds=10, margin_seconds=3, heartbeat_seconds=2,
    )  # fmt: skip
    options = session_options(settings)
    assert options.startswith("-c work_mem=8MB ")
    assert "idle_in_transaction_session_timeout=7000" in options
    assert "tcp_user_timeout=7000" in options


@pytest.mark.timeout(60)
async def test_a_silent_session_in_a_transaction_loses_its_locks(pg_dsn: str) -> None:
    settings = ClusterConfig(
        enabled=True, node_id="gw1", conninfo=pg_dsn,
        lease_seconds=2.5, margin_seconds=1.0, heartbeat_seconds=0.5,
    )  # fmt: skip
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
        await admin.execute("CREATE TABLE held (id int PRIMARY KEY)")
        await admin.execute("INSERT INTO held VALUES (1)")
    cut = await psycopg.AsyncConnection.connect(
        make_conninfo(pg_dsn, options=session_options(settings))
    )
    await cut.execute("SELECT id FROM held WHERE id = 1 FOR UPDATE")  # then silence
    async with await psycopg.AsyncConnection.connect(pg_dsn) as peer:
        # Blocks until the server ends the silent session (1.5 s here); forever without it.
        await asyncio.wait_for(peer.execute("SELECT id FROM held WHERE id = 1 FOR UPDATE"), 30)
    with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
        await cut.execute("SELECT 1")
    await cut.close()
