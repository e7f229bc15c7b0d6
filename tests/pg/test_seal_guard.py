"""No value is stored sealed under a retired field key generation (issue 18, point 5):
a node cut off through a rotation and its retirement, back before its first heartbeat,
has its accept refused by the database (`seal_guard.py`), answers `503 key_retired`,
takes the keyring up at once, and the same send again is stored under the current key;
a writer that waits on the retirement's locks is refused once it commits; every
encrypted table is guarded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from drivers.clock import FakeClock
from gateway.app import Gateway
from gateway.cluster import key_retire, keyring, seal_guard
from gateway.cluster.keyring import SEALED
from gateway.cluster.lease import Pool
from gateway.errors import ApiError
from gateway.store import crypto
from gateway.store.audit_log import audit_key
from tests.pg.test_cluster_key_retire import MASTER, node, retire, seed
from tests.pg.test_rejoin import config
from tests.pg.two_nodes import in_process_nodes
from tests.test_consent_policy import caller, send

WAIT = 10.0


async def test_every_encrypted_table_is_guarded(pool: Pool) -> None:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT c.relname, p.prosrc FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_proc p ON p.oid = t.tgfoid WHERE t.tgname LIKE '%%_sealed_generation'"
        )
        guards = {str(t): str(src) for t, src in await cur.fetchall()}
    for spec in SEALED:
        assert spec.table in guards, f"{spec.table}: no guard (seal_guard.guard_sql)"
        for column, _ in spec.columns:
            assert f"NEW.{column}" in guards[spec.table], f"{spec.table}.{column} not guarded"


async def test_a_node_back_from_a_cut_off_through_a_retirement_stores_nothing_under_it(
    tmp_path: Path, clock: FakeClock, pg_dsn: str
) -> None:
    async with in_process_nodes(tmp_path, clock, lambda d, n: config(d, n, pg_dsn)) as (a, b):
        assert a.cluster is not None and b.cluster is not None
        who = await caller(b, "send", purpose="appointment")
        before = await send(b, who, body="before the rotation")
        # B is cut off: its lease lapses in the database and no heartbeat of it runs.
        async with b.cluster.pool.connection() as conn:
            await conn.execute(
                "UPDATE nodes SET lease_until = clock_timestamp() WHERE incarnation = %s",
                (b.cluster.membership.me.incarnation,),
            )
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            generation, _ = await keyring.rotate(conn, a.cluster.queue.master_key)
            for _ in range(2):  # A takes it up, and says so a heartbeat later
                await a.cluster.keys.check(heartbeat=True)
            done = await key_retire.retire(
                conn, audit_key(a.cluster.queue.master_key), "console", "console:test", clock.time()
            )
        assert done.retired == (generation - 1,)  # B's lapsed incarnation not waited for
        assert b.cluster.queue.cipher.generation == generation - 1
        with pytest.raises(ApiError) as refused:
            await send(b, who, body="sealed under the retired key")
        assert (refused.value.status, refused.value.code) == (503, "key_retired")
        assert refused.value.headers == {"Retry-After": "1"}
        assert "sealed under the retired key" not in refused.value.message  # not the text sent
        assert b.cluster.queue.cipher.generations == {generation}  # taken up at once
        again = await send(b, who, body="sent again")
        async with a.cluster.pool.connection() as conn:
            cur = await conn.execute("SELECT id FROM messages ORDER BY created_at, id")
            stored = {str(r[0]) for r in await cur.fetchall()}
        assert stored == {before.id, again.id}  # the refused accept left nothing
        for gw in (a, b):
            got = await _message(gw, again.id)
            assert got == "sent again"


async def _message(gw: Gateway, message_id: str) -> str:
    assert gw.cluster is not None
    got = await gw.cluster.queue.message(message_id)
    assert got is not None
    return got.body.open()


async def test_a_writer_waiting_on_the_retirements_locks_is_refused_when_it_commits(
    pool: Pool, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's insert, sealed under generation 1, reaches the server while the
    retirement holds its locks: it waits, and the retirement's commit refuses it."""
    old = await seed(pool)
    a = await node(pool, "gw1")
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await keyring.rotate(conn, MASTER)
    for _ in range(2):
        await a.watch.check(heartbeat=True)
    counted = key_retire.generation_counts
    late = await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True)
    writer: asyncio.Task[object] | None = None

    async def insert_late() -> object:
        return await late.execute(
            "INSERT INTO inbound (id, seq, route, sender_ct, sender_index, body_ct,"
            " received_at, node_id) VALUES ('i1', 1, 'r', %s, %s, %s, 0, 'gw9')",
            (
                old.encrypt("+15550009", "i1", "sender"),
                old.blind_index("+15550009"),
                old.encrypt("late", "i1", "body"),
            ),
        )

    async def with_a_writer_waiting(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> object:
        nonlocal writer
        found = await counted(conn)
        if writer is None and await _holds_share_locks(conn):  # the count under the lock
            pid = late.info.backend_pid
            writer = asyncio.create_task(insert_late())
            await asyncio.wait_for(_waiting_on_a_lock(conn, pid), WAIT)
        return found

    monkeypatch.setattr(key_retire, "generation_counts", with_a_writer_waiting)
    try:
        assert await retire(pool) == key_retire.Retirement(retired=(1,))
        assert writer is not None
        with pytest.raises(psycopg.errors.CheckViolation) as refused:
            await asyncio.wait_for(writer, WAIT)
        assert seal_guard.is_refusal(refused.value)
        assert refused.value.diag.table_name == "inbound"
    finally:
        await late.close()
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM inbound")
        assert await cur.fetchone() == (0,)
        cur = await conn.execute("SELECT generation, prefix FROM retired_field_generations")
        assert await cur.fetchall() == [(1, crypto.generation_prefix(1))]


async def _holds_share_locks(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> bool:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND mode = 'ShareLock'"
        " AND locktype = 'relation'"
    )
    row = await cur.fetchone()
    return row is not None and int(row[0]) > 0


async def _waiting_on_a_lock(conn: psycopg.AsyncConnection[tuple[object, ...]], pid: int) -> None:
    """Until `pid` waits for a lock (read from the retirement's own connection)."""
    while True:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted", (pid,)
        )
        row = await cur.fetchone()
        if row is not None and int(row[0]) > 0:
            return
        await asyncio.sleep(0.01)


async def test_a_value_sealed_outside_read_committed_is_refused(pool: Pool) -> None:
    """A REPEATABLE READ snapshot may predate a retirement: no sealed value from one."""
    cipher = await seed(pool)
    async with pool.connection() as conn:
        await conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        with pytest.raises(psycopg.errors.CheckViolation) as refused:
            await conn.execute(
                "INSERT INTO inbound (id, seq, route, sender_ct, sender_index, body_ct,"
                " received_at, node_id) VALUES ('i1', 1, 'r', %s, %s, %s, 0, 'gw9')",
                (
                    cipher.encrypt("+15550009", "i1", "sender"),
                    cipher.blind_index("+15550009"),
                    cipher.encrypt("text", "i1", "body"),
                ),
            )
        assert seal_guard.is_refusal(refused.value)
        await conn.rollback()
