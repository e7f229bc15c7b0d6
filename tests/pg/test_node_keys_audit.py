"""A running node's keys and audit trail on the shared store (issue 18, point 5): the
keyring seeded from the first node and checked against each node's own, a rotation on
another node taken up (new writes sealed under it, old ciphertexts still open, a claim
of a row re-encrypted meanwhile opens it), and each node's audit trail copied into its
chain in PostgreSQL, anchored and verified as a set."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from drivers.clock import FakeClock, SystemClock
from gateway.cluster import audit, keyring, nodes
from gateway.cluster.audit_reads import ClusterAuditReads
from gateway.cluster.audit_ship import AuditShipper, ChainDiverged
from gateway.cluster.lease import Pool
from gateway.cluster.queue_store import ClusterQueue
from gateway.cluster.reads import ClusterReads
from gateway.cluster.shared_keys import KeyringMismatch, KeyringWatch, check_same, shared_keys
from gateway.models import Priority
from gateway.store import crypto
from gateway.store.audit_log import AuditTrail, audit_key
from gateway.store.records import MessageQuery
from gateway.store.store import NewMessage, Store

MASTER = os.urandom(32)
NOW = 1_800_000_000.0


async def opened(path: Path) -> Store:
    store = Store(path / "gw.db", MASTER)
    await store.open()
    return store


@pytest.fixture
async def first(tmp_path: Path) -> AsyncIterator[Store]:
    store = await opened(tmp_path / "gw1")
    try:
        yield store
    finally:
        await store.close()


async def keyring_rows(store: Store) -> list[tuple[object, ...]]:
    rows = await store.reader.all("SELECT purpose, generation, wrapped, created_at FROM keyring")
    return [tuple(r) for r in rows]


def message(n: int) -> NewMessage:
    return NewMessage(
        id=f"msg-{n:04d}",
        token_id="tok",
        priority=Priority.NORMAL,
        to=f"+1555000{n:04d}",
        body=f"body {n}",
        encoding="gsm7",
        segments=1,
        created_at=NOW - 60,
        expires_at=NOW + 3600,
    )


async def test_the_first_node_seeds_the_shared_keyring_and_others_must_match(
    pool: Pool, first: Store, tmp_path: Path
) -> None:
    assert first.cipher is not None
    keys = await shared_keys(pool, MASTER, await keyring_rows(first))
    check_same(keys, first.cipher, first.master_key)  # its own
    # A second node from a copy of the first's data directory: the same keyring.
    shutil.copytree(tmp_path / "gw1", tmp_path / "gw2")
    second = await opened(tmp_path / "gw2")
    # A node set up on its own (`smsgw init` again): another keyring, refused.
    alone = await opened(tmp_path / "gw3")
    try:
        assert second.cipher is not None and alone.cipher is not None
        again = await shared_keys(pool, MASTER, await keyring_rows(alone))  # seeds nothing
        assert again == keys
        check_same(again, second.cipher, second.master_key)
        with pytest.raises(KeyringMismatch):
            check_same(again, alone.cipher, alone.master_key)
        with pytest.raises(crypto.MasterKeyError):
            await shared_keys(pool, os.urandom(32), [])
    finally:
        await second.close()
        await alone.close()


async def test_a_rotation_on_another_node_is_taken_up_and_old_ciphertexts_still_open(
    pool: Pool, pg_dsn: str, first: Store
) -> None:
    keys = await shared_keys(pool, MASTER, await keyring_rows(first))
    cipher = crypto.FieldCipher(keys.field, keys.blind)
    async with pool.connection() as conn:
        me = await nodes.register(conn, "gw1", 60.0)
    queue = ClusterQueue(pool, cipher, lambda: me)
    watch = KeyringWatch(pool, MASTER, cipher)
    queue.keys = watch
    await queue.accept([message(1), message(2)])
    old = cipher.encrypt("+15550001", "x", "to")
    assert await watch.check() is None  # nothing changed
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        generation, done = await keyring.rotate(conn, MASTER)  # `smsgw keys rotate` elsewhere
    assert (generation, done) == (2, 2) and cipher.generation == 1
    # A claim of a row the rotation re-encrypted takes the new key up before opening it.
    (claimed,) = await queue.claim_group(["msg-0001"], "r", NOW)
    assert claimed is not None and not isinstance(claimed, Exception)
    assert claimed.to == "+15550000001" and cipher.generation == 2  # type: ignore[union-attr]
    assert await watch.check() is None
    sealed = queue.seal("msg-0003", "+15550003", "b", None, None)
    assert crypto.header_generation(sealed[0]) == 2  # new accepts: the new generation
    assert cipher.decrypt(old, "x", "to") == "+15550001"  # old ones still open
    got = await queue.message("msg-0002")
    assert got is not None and got.body.open() == "body 2"
    # Another node reads a row re-encrypted before its heartbeat took the rotation up.
    behind = crypto.FieldCipher(keys.field, keys.blind)
    reads = ClusterReads(pool, behind, KeyringWatch(pool, MASTER, behind))
    (listed,) = await reads.messages(MessageQuery(to="+15550000002"), 10)
    assert listed.to.open() == "+15550000002" and behind.generation == 2


async def test_each_nodes_trail_is_copied_into_its_chain_and_verifies_as_a_set(
    pool: Pool, first: Store, tmp_path: Path
) -> None:
    keys = await shared_keys(pool, MASTER, await keyring_rows(first))
    key = audit_key(keys.root)
    clock = SystemClock()
    first_trail = AuditTrail(first, audit_key(first.master_key), clock)
    await first_trail.record("console", "store_created", "store", None)
    shutil.copytree(tmp_path / "gw1", tmp_path / "gw2")  # as the docs set a node up
    second = await opened(tmp_path / "gw2")
    try:
        second_trail = AuditTrail(second, audit_key(second.master_key), clock)
        a = AuditShipper(pool, first.reader, "gw1", key)
        b = AuditShipper(pool, second.reader, "gw2", key)
        await first_trail.record("token:t1", "phi_read", "message", "m-1")
        await first_trail.record_each("token:t1", "phi_read", "message", ["m-2", "m-3"])
        await second_trail.record("user:1", "route_paused", "route", "carrier")
        assert await a.ship() == 4 and await b.ship() == 2
        assert await a.ship() == 0  # nothing new: nothing copied
        assert await a.anchor(NOW) == 1
        assert await b.anchor(NOW) is None  # no head moved since
        await second_trail.record("user:1", "route_resumed", "route", "carrier")
        assert await b.ship() == 1 and await b.anchor(NOW + 1) == 2
        async with pool.connection() as conn:
            result = await audit.verify(conn, key)
            local = (await first_trail.verify()).head_hash
        assert result.ok, result.problems
        assert {(h.node_id, h.entries) for h in result.heads} == {("gw1", 4), ("gw2", 3)}
        assert result.anchors == 2
        assert next(h.hash for h in result.heads if h.node_id == "gw1") == local
        # Another writer under gw1's id: the copy stops rather than fork the chain.
        async with pool.connection() as conn:
            await audit.append(conn, key, "gw1", NOW, "console", "key_rotated")
        await first_trail.record("token:t1", "phi_read", "message", "m-4")
        with pytest.raises(ChainDiverged):
            await a.ship()
    finally:
        await second.close()


async def test_the_panels_audit_reads_every_chain_newest_first_page_by_page(
    pool: Pool, first: Store
) -> None:
    """`ClusterAuditReads` (the panel's audit page on a cluster node): this node's trail
    copied up first, then every node's entries by time, ties by node and seq, each once
    across pages (the cursor), read through the time index; a diverged chain of this
    node id does not stop the page. Verify reports every chain."""
    keys = await shared_keys(pool, MASTER, await keyring_rows(first))
    key = audit_key(keys.root)
    clock = FakeClock(NOW)
    trail = AuditTrail(first, audit_key(first.master_key), clock)
    for n in range(3):
        await trail.record("console", "probe", "node", "gw1", n=n)
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        for n in range(6):  # two other nodes, writing at the same instants as gw1
            for node in ("gw2", "gw3"):
                await audit.append(conn, key, node, NOW + n // 2, "system", "probe", n=n)
    reads = ClusterAuditReads(pool, AuditShipper(pool, first.reader, "gw1", key))
    pages: list[list[tuple[float, str, int]]] = []
    before = None
    while page := await reads.entries(before=before, limit=4):
        pages.append([(t.entry.at, t.node, t.entry.seq) for t in page])
        before = page[-1].cursor
    found = [row for p in pages for row in p]
    assert len(found) == 15 and found == sorted(found, reverse=True)
    assert [len(p) for p in pages] == [4, 4, 4, 3]
    checked = await reads.verify()
    assert checked.ok and checked.entries == 15
    assert [(c.node, c.entries) for c in checked.chains] == [("gw1", 3), ("gw2", 6), ("gw3", 6)]

    async with pool.connection() as conn:  # another writer under gw1's id
        await audit.append(conn, key, "gw1", NOW + 9, "console", "key_rotated")
    await trail.record("console", "probe", "node", "gw1", n=3)
    newest = await reads.entries(before=None, limit=1)
    assert [(t.node, t.entry.action) for t in newest] == [("gw1", "key_rotated")]

    async with pool.connection() as conn:  # a long trail: a page reads a page of rows
        await conn.execute(
            "INSERT INTO audit_log SELECT 'old', i, i, 'system', 'probe', NULL, NULL, '{}',"
            " '', '' FROM generate_series(1, 20000) i"
        )
        await conn.execute("ANALYZE audit_log")
        plan = await (
            await conn.execute(
                "EXPLAIN SELECT * FROM audit_log WHERE (at, node_id, seq) < (%s, %s, %s)"
                " ORDER BY at DESC, node_id DESC, seq DESC LIMIT 100",
                (15000.0, "old", 15000),
            )
        ).fetchall()
    text = "\n".join(str(r[0]) for r in plan)
    assert "Index Scan Backward using audit_log_time" in text and "Sort" not in text, text
