"""Issue 18 pt 5 (MSG-12 on a cluster): `[retention]` reaches what the nodes share.

Two nodes (each its own SQLite store and audit trail) on one PostgreSQL, under one
keyring's cipher, run the retention job (`Retention` with `ClusterSweep`, as
`usecases_wiring` builds it on a cluster node). Finished shared messages and shared
inbound older than their periods are blanked as SQLite's sweep blanks them ("" sealed
for the row and column, index emptied, `redacted` levels); younger, waiting and
recently changed rows are untouched; two nodes sweeping at once blank each row once
and each audits only what it did; the canary no longer appears in any shared table.
At a realistic size the due rows are read through their partial indexes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from drivers.clock import FakeClock
from gateway.cluster.inbound import ClusterInbound
from gateway.cluster.lease import Pool
from gateway.cluster.retention import STEPS, ClusterSweep, due_inbound, due_messages
from gateway.cluster.schema import MIGRATIONS, migrate
from gateway.ops import registry
from gateway.retention.job import Retention
from gateway.retention.settings import PurposeRetention, RetentionConfig
from gateway.retention.sweep import groups
from gateway.store import crypto
from gateway.store.audit_log import AuditTrail, audit_key
from gateway.store.crypto import FieldCipher
from gateway.store.store import Store
from tests.conftest import CANARY_BODY, CANARY_DIGITS, CANARY_NUMBER
from tests.pg.test_erasure_cluster import _config as node_config

DAY = 86400.0
CONFIG = RetentionConfig(
    body_days=90,
    number_days=365,
    batch=10,
    purposes={"emergency": PurposeRetention(body_days=10)},
)


@dataclass
class Node:
    store: Store
    audit: AuditTrail
    retention: Retention


@dataclass
class Cluster:
    pool: Pool
    cipher: FieldCipher  # the shared keyring's, as every node holds it
    index: bytes  # the canary's blind index
    a: Node
    b: Node


@pytest.fixture
async def cluster(tmp_path: Path, clock: FakeClock, pool: Pool) -> AsyncIterator[Cluster]:
    stores: list[Store] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            key_path = tmp_path / name / "master.key"
            crypto.generate_master_key(key_path)
            store = Store(tmp_path / name / "smsgw.db", crypto.read_master_key(key_path))
            await store.open()
            stores.append(store)
        cipher = stores[0].cipher
        assert cipher is not None
        nodes = []
        for store in stores:
            audit = AuditTrail(store, audit_key(store.master_key), clock)
            sweep = ClusterSweep(pool, cipher, CONFIG)
            nodes.append(Node(store, audit, Retention(store, CONFIG, clock, audit, sweep)))
        yield Cluster(pool, cipher, stores[0].blind_index(CANARY_NUMBER), nodes[0], nodes[1])
    finally:
        for store in stores:
            await store.close()


async def _messages(
    c: Cluster,
    ids: list[str],
    state: str,
    created: float,
    updated: float | None = None,
    purpose: str | None = None,
) -> None:
    e = c.cipher.encrypt
    async with c.pool.connection() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
            " encoding, segments, created_at, updated_at, due_at, expires_at, reference_ct,"
            " callback_ct, purpose) VALUES (%s, 2, %s, 'main', %s, %s, %s, 'gsm7', 1, %s, %s,"
            " %s, %s, %s, %s, %s)",
            [
                (
                    mid, state, e(CANARY_NUMBER, mid, "to"), c.index, e(CANARY_BODY, mid, "body"),
                    created, updated or created, created, created + DAY,
                    e("chart-" + CANARY_DIGITS, mid, "reference"),
                    e("https://ehr.example/cb", mid, "callback"), purpose,
                )
                for mid in ids
            ],
        )  # fmt: skip


async def _inbound(c: Cluster, iid: str, received: float) -> None:
    shared = ClusterInbound(c.pool, c.cipher, c.a.store, "a")
    await shared.insert_inbound(iid, "main", CANARY_NUMBER, CANARY_BODY, "7333", None, received)


async def _reviews(c: Cluster, ids: list[str], created: float) -> None:
    async with c.pool.connection() as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO consent_reviews (id, inbound_id, contact_idx, program, reason,"
            " created_at, body_ct, node_id) VALUES (%s, %s, %s, '*', 'free_text', %s, %s, 'a')",
            [
                (rid, "in-" + rid, c.index, created, c.cipher.encrypt(CANARY_BODY, rid, "body"))
                for rid in ids
            ],
        )


async def _rows(c: Cluster, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    async with c.pool.connection() as conn:
        rows = await (await conn.execute(sql.encode(), args)).fetchall()
    return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]


def _shared(counts: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if k.startswith("shared_")}


async def _runs(node: Node) -> list[dict[str, Any]]:
    entries = await node.audit.entries(limit=100)
    return [json.loads(e.detail) for e in entries if e.action == "retention_run"]


async def test_finished_shared_rows_past_their_periods_are_blanked_and_the_rest_kept(
    cluster: Cluster, clock: FakeClock
) -> None:
    c, now = cluster, clock.time()
    await _messages(c, ["m-text"], "delivered", now - 100 * DAY)
    await _messages(c, ["m-both"], "failed", now - 400 * DAY)
    await _messages(c, ["m-emergency"], "sent", now - 20 * DAY, purpose="emergency")
    await _messages(c, ["m-young"], "delivered", now - 50 * DAY)
    await _messages(c, ["m-receipt"], "delivered", now - 100 * DAY, updated=now - DAY)
    for state in ("queued", "scheduled", "sending"):  # waiting: never touched, however old
        await _messages(c, [f"m-{state}"], state, now - 400 * DAY)
    await _inbound(c, "i-text", now - 100 * DAY)
    await _inbound(c, "i-both", now - 400 * DAY)
    await _inbound(c, "i-young", now - 5 * DAY)
    await _reviews(c, ["r-old"], now - 100 * DAY)
    await _reviews(c, ["r-young"], now - 5 * DAY)
    async with c.pool.connection() as conn, conn.cursor() as cur:  # Kannel dlr-url rows
        await cur.executemany(
            "INSERT INTO kannel_dlr VALUES (%s, '\\x00', 31, '\\x00', 'sms', 'his', %s)",
            [("m-text", now - 100 * DAY), ("m-young", now - 50 * DAY)],
        )
    expected = {
        "shared_message_texts": 3,  # m-text, m-both, m-emergency
        "shared_message_numbers": 1,  # m-both
        "shared_inbound_texts": 2,
        "shared_inbound_numbers": 1,
        "shared_review_texts": 1,
        "shared_notice_variables": 0,  # tests/pg/test_appointments_cluster.py
        "shared_hl7_messages": 0,  # tests/pg/test_hl7_cluster.py
        "shared_hl7_writebacks": 0,  # tests/pg/test_hl7_writeback_cluster.py
    }
    assert _shared((await c.a.retention.status()).due) == expected

    outcome = await c.a.retention.run("console")

    assert _shared(outcome.removed) == expected
    (run,) = await _runs(c.a)
    assert _shared(run) == expected and run["message_texts"] == 0  # the node's own: none
    assert await _runs(c.b) == []
    assert _shared((await c.a.retention.status()).due) == dict.fromkeys(STEPS, 0)
    # A message's dlr-url row goes with its text, as on one node.
    assert await _rows(c, "SELECT message_id FROM kannel_dlr") == [("m-young",)]

    d = c.cipher.decrypt
    messages = {
        r[0]: r[1:]
        for r in await _rows(
            c, "SELECT id, to_ct, body_ct, reference_ct, callback_ct, to_index, redacted,"
            " state FROM messages",
        )
    }  # fmt: skip
    for mid, (to_ct, body_ct, ref_ct, cb_ct, index, redacted, _) in messages.items():
        body, to = d(body_ct, mid, "body"), d(to_ct, mid, "to")
        if mid in ("m-text", "m-emergency"):
            assert (body, ref_ct, cb_ct, to, index, redacted) == (
                "",
                None,
                None,
                CANARY_NUMBER,
                c.index,
                1,
            )
        elif mid == "m-both":
            assert (body, ref_ct, cb_ct, to, index, redacted) == ("", None, None, "", b"", 2)
        else:  # young, recently changed or waiting
            assert (body, to, index, redacted) == (CANARY_BODY, CANARY_NUMBER, c.index, 0), mid
            assert d(ref_ct, mid, "reference") == "chart-" + CANARY_DIGITS
    assert {m: r[6] for m, r in messages.items() if r[6] in ("queued", "scheduled", "sending")} == {
        "m-queued": "queued", "m-scheduled": "scheduled", "m-sending": "sending"
    }  # fmt: skip
    inbound = await _rows(
        c, "SELECT id, sender_ct, body_ct, sender_index, redacted FROM inbound ORDER BY id"
    )
    assert [
        (iid, d(s, iid, "sender"), d(b, iid, "body"), idx, red) for iid, s, b, idx, red in inbound
    ] == [
        ("i-both", "", "", b"", 2),
        ("i-text", CANARY_NUMBER, "", c.index, 1),
        ("i-young", CANARY_NUMBER, CANARY_BODY, c.index, 0),
    ]
    reviews = await _rows(c, "SELECT id, body_ct IS NULL FROM consent_reviews ORDER BY id")
    assert reviews == [("r-old", True), ("r-young", False)]

    # A year on, the rest goes too; a number is removed after its text, never before.
    clock.advance(366 * DAY)
    again = _shared((await c.a.retention.run("console")).removed)
    assert again == {
        "shared_message_texts": 2,  # m-young, m-receipt (the waiting ones: never)
        "shared_message_numbers": 4,  # those, m-text and m-emergency
        "shared_inbound_texts": 1,
        "shared_inbound_numbers": 2,
        "shared_review_texts": 1,
        "shared_notice_variables": 0,  # tests/pg/test_appointments_cluster.py
        "shared_hl7_messages": 0,  # tests/pg/test_hl7_cluster.py
        "shared_hl7_writebacks": 0,  # tests/pg/test_hl7_writeback_cluster.py
    }


async def test_two_nodes_sweeping_at_once_blank_each_row_once_and_audit_their_own(
    cluster: Cluster, clock: FakeClock
) -> None:
    c, now = cluster, clock.time()
    rows = 25  # batches of 10: each node takes several, interleaved
    await _messages(c, [f"m-{i:02d}" for i in range(rows)], "delivered", now - 400 * DAY)
    await _reviews(c, [f"r-{i:02d}" for i in range(rows)], now - 400 * DAY)
    for i in range(rows):
        await _inbound(c, f"i-{i:02d}", now - 400 * DAY)

    await asyncio.gather(c.a.retention.run("gateway"), c.b.retention.run("gateway"))

    (run_a,), (run_b,) = await _runs(c.a), await _runs(c.b)
    unseeded = ("shared_notice_variables", "shared_hl7_messages", "shared_hl7_writebacks")
    seeded = [step for step in STEPS if step not in unseeded]
    for step in seeded:  # each row counted by the one node that blanked it
        assert run_a[step] + run_b[step] == rows, step
    assert await _rows(c, "SELECT DISTINCT redacted FROM messages") == [(2,)]
    assert await _rows(c, "SELECT DISTINCT redacted FROM inbound") == [(2,)]
    d = c.cipher.decrypt
    for mid, to_ct, body_ct in await _rows(c, "SELECT id, to_ct, body_ct FROM messages"):
        assert (d(to_ct, mid, "to"), d(body_ct, mid, "body")) == ("", "")
    # No shared table holds the canary's number, text or blind index in any form.
    tables = await _rows(
        c, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
    )
    assert ("messages",) in tables and ("inbound",) in tables
    for (table,) in tables:
        sql = f"SELECT t::text FROM {table} t"  # noqa: S608 - the catalogue's names
        dump = " ".join(str(r[0]) for r in await _rows(c, sql))
        assert CANARY_DIGITS not in dump and CANARY_BODY not in dump, table
        if table != "consent_reviews":  # a review keeps its contact's index, as SQLite's
            assert c.index.hex() not in dump, table


@pytest.fixture
async def bare_pool(pg_dsn: str) -> AsyncIterator[Pool]:
    async with AsyncConnectionPool(pg_dsn, min_size=1, max_size=2, open=False) as p:
        yield p


async def test_migration_13_keeps_what_was_redacted_and_due_rows_are_read_by_index(
    bare_pool: Pool,
) -> None:
    """A flagged row becomes level 2 when erased (index empty), else 1; at a realistic
    size (years of swept rows, weeks of kept ones) each step reads its partial index."""
    async with bare_pool.connection() as conn:
        await conn.execute("CREATE TABLE cluster_schema (version integer NOT NULL)")
        await conn.execute("INSERT INTO cluster_schema VALUES (12)")
        for sql in MIGRATIONS[:12]:
            await conn.execute(sql.encode())
        await conn.execute(
            "INSERT INTO messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
            " encoding, segments, created_at, updated_at, due_at, expires_at, redacted)"
            " VALUES ('kept', 2, 'sent', 'g', '\\x01', '\\x02', '\\x03', 'gsm7', 1, 0, 0, 0, 0,"
            " false), ('text', 2, 'sent', 'g', '\\x01', '\\x02', '\\x03', 'gsm7', 1, 0, 0, 0, 0,"
            " true), ('erased', 2, 'sent', 'g', '\\x01', '\\x', '\\x03', 'gsm7', 1, 0, 0, 0, 0,"
            " true)"
        )
        await conn.commit()
        assert await migrate(conn) == len(MIGRATIONS)
        cur = await conn.execute("SELECT id, redacted FROM messages ORDER BY id")
        assert await cur.fetchall() == [("erased", 2), ("kept", 0), ("text", 1)]

        # 20 000 messages (90% past both periods, 5% text gone, 5% kept), half as
        # many inbound, the same shares.
        await conn.execute(
            "INSERT INTO messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
            " encoding, segments, created_at, updated_at, due_at, expires_at, redacted,"
            " purpose) SELECT 'x' || i, 2, 'delivered', 'g', '\\x01', '\\x02', '\\x03', 'gsm7',"
            " 1, i, i, i, i, CASE WHEN i < 18000 THEN 2 WHEN i < 19000 THEN 1 ELSE 0 END,"
            " NULL FROM generate_series(1, 20000) i"
        )
        await conn.execute(
            "INSERT INTO inbound (id, seq, route, sender_ct, sender_index, body_ct,"
            " received_at, redacted, node_id) SELECT 'y' || i, i, 'main', '\\x01', '\\x02',"
            " '\\x03', i, CASE WHEN i < 9000 THEN 2 WHEN i < 9500 THEN 1 ELSE 0 END, 'a'"
            " FROM generate_series(1, 10000) i"
        )
        await conn.execute("ANALYZE messages, inbound")
        await conn.commit()
        plans: list[str] = []
        for g in groups(CONFIG, 20_000.0):  # the sweep's own queries, as a batch takes them
            for level in (0, 1):
                sql, params = due_messages(level, g, 19_500.0)
                plans.append(await _plan(conn, sql + " ORDER BY created_at", params))
        for level in (0, 1):
            sql, params = due_inbound(level, 9_700.0)
            plans.append(await _plan(conn, sql + " ORDER BY received_at", params))
    kept = ("messages_text_kept", "messages_number_kept")
    for i, plan in enumerate(plans[:-2]):
        assert kept[i % 2] in plan and "Seq Scan" not in plan, plan
    for level, plan in enumerate(plans[-2:]):
        assert ("inbound_text_kept", "inbound_number_kept")[level] in plan, plan
        assert "Seq Scan" not in plan, plan


async def _plan(conn: Any, sql: str, params: tuple[Any, ...]) -> str:
    cur = await conn.execute(f"EXPLAIN {sql} LIMIT 500 FOR UPDATE SKIP LOCKED".encode(), params)
    return "\n".join(str(r[0]) for r in await cur.fetchall())


async def test_the_console_offline_on_a_cluster_node_refuses_a_half_retention_run(
    tmp_path: Path, clock: FakeClock
) -> None:
    """With no node running, `smsgw retention run` would sweep only the node's own
    store: it refuses, naming where to run it, and audits nothing."""
    config = node_config(tmp_path / "gw1", "gw1", "postgresql://unused/smsgw")
    crypto.generate_master_key(config.master_key_path)
    store = Store(config.db_path, crypto.read_master_key(config.master_key_path))
    await store.open()
    said: list[str] = []
    try:
        codes = []
        for name in ("retention.run", "retention.status"):
            code = await registry.run_in(
                config, store, store.master_key, name, {}, actor="console",
                out=said.append, err=said.append, clock=clock,
            )  # fmt: skip
            codes.append(code)
        entries = await AuditTrail(store, audit_key(store.master_key), clock).entries()
    finally:
        await store.close()
    assert codes == [2, 2] and "while the node runs" in said[0]
    assert [e.action for e in entries if e.action == "retention_run"] == []
