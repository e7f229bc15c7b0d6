"""Retiring a shared field key generation after a rotation (issue 18, point 5): two
nodes take the rotation up and say so, the older wrapped key is deleted (audited) only
once no ciphertext is left under it, both nodes forget it and still read everything; a
row sealed under the older key by a node behind, before the retirement or while it
counts, makes it refuse."""

from __future__ import annotations

import os
from dataclasses import dataclass

import psycopg
import pytest

from gateway.cluster import key_commands, key_retire, keyring, nodes
from gateway.cluster.lease import Pool
from gateway.cluster.queue_store import ClusterQueue
from gateway.cluster.shared_keys import KeyringWatch
from gateway.store import crypto
from gateway.store.audit_log import audit_key
from tests.pg.test_node_keys_audit import message

MASTER = os.urandom(32)
KEY = audit_key(MASTER)  # no root key in the keyring: the root is the master key
NOW = 1_800_000_000.0


@dataclass
class Node:
    queue: ClusterQueue
    watch: KeyringWatch
    cipher: crypto.FieldCipher


async def seed(pool: Pool) -> crypto.FieldCipher:
    """A keyring of field generation 1 and the blind key, wrapped by MASTER."""
    field, blind = os.urandom(32), os.urandom(32)
    async with pool.connection() as conn:
        for purpose, key in (("field", field), ("blind", blind)):
            await conn.execute(
                "INSERT INTO keyring VALUES (%s, 1, %s, 0)",
                (purpose, crypto.wrap_key(MASTER, purpose, 1, key)),
            )
    return crypto.FieldCipher({1: field}, blind)


async def node(pool: Pool, name: str) -> Node:
    async with pool.connection() as conn:
        me = await nodes.register(conn, name, 60.0)
        keys = await keyring.load(conn, MASTER)
    cipher = crypto.FieldCipher(keys.field, keys.blind)
    queue = ClusterQueue(pool, cipher, lambda: me)
    watch = KeyringWatch(pool, MASTER, cipher, lambda: me)
    queue.keys = watch
    return Node(queue, watch, cipher)


async def retire(pool: Pool) -> key_retire.Retirement:
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        return await key_retire.retire(conn, KEY, "console", "console:test", NOW)


async def rows(pool: Pool, sql: str) -> list[tuple[object, ...]]:
    async with pool.connection() as conn:
        return list(await (await conn.execute(sql.encode())).fetchall())


async def test_two_nodes_rotate_retire_and_still_read_everything(pool: Pool, pg_dsn: str) -> None:
    await seed(pool)
    a, b = await node(pool, "gw1"), await node(pool, "gw2")
    await a.queue.accept([message(1), message(2)])
    await b.queue.accept([message(3)])
    assert await retire(pool) == key_retire.Retirement()  # one generation: nothing to do
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        assert await keyring.rotate(conn, MASTER) == (2, 3)
    # Neither node has taken the rotation up: the retirement waits for both.
    assert (await retire(pool)).behind == ("gw1/1", "gw2/2")
    assert await a.watch.check() == 2  # a read met generation 2 between heartbeats
    assert await a.watch.check(heartbeat=True) is None
    assert await b.watch.check(heartbeat=True) == 2
    assert (await retire(pool)).behind == ("gw1/1", "gw2/2")  # neither has said so yet
    for n in (a, b):
        assert await n.watch.check(heartbeat=True) is None  # said a heartbeat later
    await b.queue.accept([message(4)])  # under generation 2
    assert await retire(pool) == key_retire.Retirement(retired=(1,))
    assert await rows(pool, "SELECT purpose, generation FROM keyring ORDER BY 1, 2") == [
        ("blind", 1),
        ("field", 2),
    ]
    assert await rows(pool, "SELECT node_id, action, target_id FROM audit_log ORDER BY seq") == [
        ("console", "key_generation_retired", "field:1")
    ]
    for n in (a, b):
        assert await n.watch.check(heartbeat=True) == 2 and n.cipher.generations == {2}  # forgotten
        for i in (1, 2, 3, 4):
            got = await n.queue.message(f"msg-{i:04d}")
            assert got is not None and got.body.open() == f"body {i}"


async def test_a_row_sealed_under_the_older_key_by_a_node_behind_makes_it_refuse(
    pool: Pool, pg_dsn: str
) -> None:
    await seed(pool)
    a, b = await node(pool, "gw1"), await node(pool, "gw2")
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await keyring.rotate(conn, MASTER)
    for _ in range(2):
        await a.watch.check(heartbeat=True)
    await b.queue.accept([message(5)])  # gw2 has not taken generation 2 up: sealed under 1
    refused = await retire(pool)
    assert refused.left == {1: 2} and refused.behind == ("gw2/2",)  # its number and text
    for _ in range(2):
        await b.watch.check(heartbeat=True)
    # The console's flow: refused for the row left, a pass over it, then retired.
    said: list[str] = []
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        code = await key_commands.retire_older(
            conn, MASTER, KEY, "console", "console:test", lambda: NOW, said.append, wait=0
        )
    assert code == 0, said
    assert said == [
        "1 rows written under an older key meanwhile, re-encrypted",
        "older field key generations retired: 1",
    ]
    await b.watch.check(heartbeat=True)
    got = await b.queue.message("msg-0005")
    assert got is not None and got.to.open() == "+15550000005" and b.cipher.generations == {2}


async def test_a_row_written_while_the_retirement_counts_is_seen_under_its_lock(
    pool: Pool, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first count finds nothing; a row sealed under generation 1 commits before
    the deleting transaction locks the tables: its count under the lock refuses."""
    old = await seed(pool)
    a = await node(pool, "gw1")
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await keyring.rotate(conn, MASTER)
    for _ in range(2):
        await a.watch.check(heartbeat=True)
    counted = key_retire.generation_counts
    calls = 0

    async def then_a_late_row(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> dict[int, int]:
        nonlocal calls
        calls += 1
        found = await counted(conn)
        if calls == 1:  # a writer that sealed under generation 1 before it was rotated
            async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as late:
                await late.execute(
                    "INSERT INTO inbound (id, seq, route, sender_ct, sender_index, body_ct,"
                    " received_at, node_id) VALUES ('i1', 1, 'r', %s, %s, %s, 0, 'gw9')",
                    (
                        old.encrypt("+15550009", "i1", "sender"),
                        old.blind_index("+15550009"),
                        old.encrypt("late", "i1", "body"),
                    ),
                )
        return found

    monkeypatch.setattr(key_retire, "generation_counts", then_a_late_row)
    assert await retire(pool) == key_retire.Retirement(left={1: 2})
    assert calls == 2
    assert await rows(pool, "SELECT generation FROM keyring WHERE purpose = 'field'") == [
        (1,),
        (2,),
    ]
