"""`smsgw store migrate --to postgresql://…`: a SQLite store into an empty cluster store.

Offline: the caller holds the data directory's lock (a running gateway refuses it).
Order: open the SQLite store with its own code (its schema brought up to date, its keys
unwrapped); refuse a target that holds anything but an unfinished migration; apply the
cluster schema; record the run in `store_migrations`; copy (`migrate_copy.py`); hand
the `sending` rows to an incarnation whose lease has already lapsed, so the first
node's recovery sweep requeues them flagged `possible_duplicate` (the crash rule: they
may have reached the carrier); verify (`migrate_verify.py`); then append
`store_migrated` to the node's audit chain, write an anchor, and mark the run finished.

Re-running after a failure is a clean restart: a target whose only migration never
finished is emptied (in one transaction, the audit triggers lifted for it alone) and
copied again from the start. A finished target is refused like any non-empty one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow

from gateway.cluster import audit, migrate_campaigns, migrate_clinical, nodes, schema
from gateway.cluster.migrate_consent import copy_reviews
from gateway.cluster.migrate_copy import MigrationRefused, Progress, copy_table, set_sequences
from gateway.cluster.migrate_copy import tables as copied_tables
from gateway.cluster.migrate_verify import verify
from gateway.models import State
from gateway.store.audit_log import audit_key
from gateway.store.crypto import FieldCipher
from gateway.store.store import Store

Out = Callable[[str], None]
REFUSED = 4  # as `smsgw restore`: the target is not empty, or the gateway runs
FAILED = 1
MIGRATE_LOCK = 0x736D7367_77001803  # pg_try_advisory_lock key: one migration at a time
MIGRATION_NODE = "sqlite-migration"  # the lapsed incarnation that owned `sending` rows
_KEPT = ("cluster_schema", "store_migrations")
# Their triggers refuse a TRUNCATE: lifted, in the emptying transaction alone.
_APPEND_ONLY = ("audit_log", "audit_anchors", "consent_ledger")


async def migrate_store(
    db_path: Path,
    master: bytes,
    conn: AsyncConnection[TupleRow],
    *,
    node_id: str,
    actor: str,
    now: float,
    out: Out,
    progress: Progress,
    batch: int = 5000,
    sample: int = 200,
) -> int:
    """The exit status: 0 migrated and verified, 1 verification failed, 4 refused."""
    store = Store(db_path, master)
    await store.open()
    try:
        cipher, root = store.cipher, store.master_key
    finally:
        await store.close()
    assert cipher is not None
    # Held for the whole run: the emptiness check and the copy are one step, and a
    # second migration into the same database (from another site) is refused.
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATE_LOCK,))
    got = await cur.fetchone()
    if not (got and got[0]):
        out("store migrate: refused: another migration into this database is running")
        return REFUSED
    try:
        return await _migrate_locked(
            db_path, master, conn, cipher, root, node_id=node_id, actor=actor, now=now,
            out=out, progress=progress, batch=batch, sample=sample,
        )  # fmt: skip
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))


async def _migrate_locked(
    db_path: Path,
    master: bytes,
    conn: AsyncConnection[TupleRow],
    cipher: FieldCipher,
    root: bytes,
    *,
    node_id: str,
    actor: str,
    now: float,
    out: Out,
    progress: Progress,
    batch: int,
    sample: int,
) -> int:
    try:
        await _prepare_target(conn, out)
    except MigrationRefused as e:
        out(f"store migrate: refused: {e}")
        return REFUSED
    await schema.migrate(conn)
    cur = await conn.execute(
        "INSERT INTO store_migrations (source, node_id) VALUES (%s, %s) RETURNING id",
        (str(db_path), node_id),
    )
    run = await cur.fetchone()
    await conn.commit()
    assert run is not None
    src = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        specs = (
            *copied_tables(node_id),
            *migrate_clinical.COPIES,
            *migrate_campaigns.copies(node_id),
        )
        try:
            for spec in specs:
                copied = await copy_table(src, conn, spec, batch=batch, progress=progress)
                out(f"{spec.target}: {copied} rows copied")
            reviews = await copy_reviews(src, conn, cipher, node_id, progress)
            out(f"consent_reviews: {reviews} rows copied")
            enrolled = await migrate_campaigns.enrol_rest(src, conn)
            out(f"campaign_recipients: {enrolled} still to send (after the cursors)")
        except MigrationRefused as e:
            out(f"store migrate: stopped: {e}; the target stays unfinished")
            return REFUSED
        except psycopg.DatabaseError as e:
            # The primary message names the column or constraint; its detail could quote
            # a row, so it is left out.
            primary = e.diag.message_primary or type(e).__name__
            out(f"store migrate: stopped by PostgreSQL ({e.sqlstate}: {primary}); run it again")
            return FAILED
        await set_sequences(conn)
        sending = await _orphan_sending(conn)
        out(f"sending: {sending} rows left to the first node's recovery (possible duplicates)")
        key = audit_key(root)
        report = await verify(
            src, conn, specs, source_cipher=cipher, master=master, audit_key=key,
            node_id=node_id, sample=sample,
        )  # fmt: skip
    finally:
        src.close()
    for line in report.lines:
        out(f"verified: {line}")
    for line in report.problems:
        out(f"MISMATCH: {line}")
    if report.problems:
        out("store migrate: verification FAILED; the target stays unfinished (run again)")
        return FAILED
    (messages,) = (await (await conn.execute("SELECT count(*) FROM messages")).fetchone()) or (0,)
    await audit.append(
        conn, key, node_id, now, actor, "store_migrated", "store", "postgresql",
        messages=int(messages), run=int(run[0]),
    )  # fmt: skip
    await audit.anchor(conn, key, node_id, now)
    final = await audit.verify(conn, key)
    if not final.ok:
        for problem in final.problems:
            out(f"MISMATCH: audit chain on the target: {problem}")
        return FAILED
    await conn.execute(
        "UPDATE store_migrations SET finished_at = clock_timestamp() WHERE id = %s", (run[0],)
    )
    await conn.commit()
    out(f"store migrate: done; {messages} messages, audit chain of node {node_id} verified")
    return 0


async def _prepare_target(conn: AsyncConnection[TupleRow], out: Out) -> None:
    """Refuse a target with rows in it, unless they are an unfinished migration's: then
    empty it for a clean restart."""
    cur = await conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"
    )
    names = [str(r[0]) for r in await cur.fetchall()]
    filled = [n for n in names if n not in _KEPT and await _has_rows(conn, n)]
    unfinished = False
    if "store_migrations" in names:
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE finished_at IS NULL), count(finished_at)"
            " FROM store_migrations"
        )
        row = await cur.fetchone()
        assert row is not None
        if row[1]:
            raise MigrationRefused("the target holds a store migrated before; use an empty one")
        unfinished = bool(row[0])
    await conn.commit()
    if not filled:
        return
    if not unfinished:
        raise MigrationRefused(
            f"the target database is not empty ({', '.join(filled[:5])} hold rows);"
            " migrate only into an empty database"
        )
    out(f"store migrate: an earlier run did not finish; emptying {len(filled)} tables first")
    async with conn.transaction():
        for name in _APPEND_ONLY:
            await conn.execute(
                sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(sql.Identifier(name))
            )
        await conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
                sql.SQL(", ").join(sql.Identifier(n) for n in filled)
            )
        )
        for name in _APPEND_ONLY:
            await conn.execute(
                sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(sql.Identifier(name))
            )


async def _has_rows(conn: AsyncConnection[TupleRow], table: str) -> bool:
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
    row = await (await conn.execute(query)).fetchone()
    return bool(row and row[0])


async def _orphan_sending(conn: AsyncConnection[TupleRow]) -> int:
    """Give the copied `sending` rows an owner whose lease is over, so they are
    recovered (requeued, flagged) by the first sweep of any node that starts."""
    owner = await nodes.register(conn, MIGRATION_NODE, 0.0)
    cur = await conn.execute(
        "UPDATE messages SET owner_node = %s, owner_incarnation = %s WHERE state = %s",
        (owner.node_id, owner.incarnation, State.SENDING.value),
    )
    await conn.commit()
    return cur.rowcount
