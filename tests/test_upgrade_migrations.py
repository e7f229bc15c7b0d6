"""Upgrades from every earlier schema version, with data in it (issue 14, point 7).

For each k, a store is built with `MIGRATIONS[:k]` and filled: one generic row in every
table that exists at k (values chosen from `PRAGMA table_info`: only the NOT NULL
columns without a default get one, foreign keys point at the parent's row, a
`CHECK (col IN (...))` gets its first value), plus real rows made by the code itself: the
keyring wrapped with the master key, a message encrypted by the field cipher (inserted
through the group-commit writer with `Store.insert_statements` where the schema at k has
every column it writes), and an audit entry chained by `AuditTrail.append_in` once the
audit trail exists. Then a full gateway opens it (which migrates it): every row kept,
`integrity_check` and `foreign_key_check` clean, the message readable, the chain intact.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from drivers.clock import SystemClock
from gateway.app import Gateway
from gateway.models import Priority
from gateway.store import crypto
from gateway.store.audit_log import AuditTrail, audit_key
from gateway.store.schema import MIGRATIONS, _statements
from gateway.store.store import NewMessage, Store
from gateway.store.writer import GroupCommitWriter
from tests.conftest import make_config

REAL = {"keyring", "messages", "audit_log"}
NUMBER, BODY = "+12025550147", "Your results are ready (upgrade test)"


def _build(path: Path, k: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:k]:
        for statement in _statements(script):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {k}")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )
    return [r[0] for r in rows]


def _by_dependency(conn: sqlite3.Connection, tables: list[str]) -> list[str]:
    ordered: list[str] = []
    parents = {
        t: {r[2] for r in conn.execute(f"PRAGMA foreign_key_list({t})")} - {t} for t in tables
    }
    while len(ordered) < len(tables):
        ready = [t for t in tables if t not in ordered and parents[t] <= set(ordered)]
        assert ready, f"foreign keys in a cycle: {parents}"
        ordered.extend(sorted(ready))
    return ordered


def _allowed(create_sql: str, column: str) -> str | None:
    found = re.search(
        rf"\b{column}\b[^,]*?CHECK\s*\(\s*{column}\s+IN\s*\(\s*'([^']*)'", create_sql, re.S
    )
    return found.group(1) if found else None


def _value(conn: sqlite3.Connection, table: str, col: tuple[Any, ...], sql: str) -> Any:
    _, name, kind, _, _, pk = col
    for fk in conn.execute(f"PRAGMA foreign_key_list({table})"):
        if fk[3] == name:
            return conn.execute(f"SELECT {fk[4] or 'rowid'} FROM {fk[2]} LIMIT 1").fetchone()[0]  # noqa: S608
    if (allowed := _allowed(sql, name)) is not None:
        return allowed
    kind = kind.upper()
    if "INT" in kind:
        return 1
    if "REAL" in kind:
        return time.time()
    if "BLOB" in kind:
        return bytes(16)
    return f"{table}-{name}" if pk else f"up-{name}"


def _generic_row(conn: sqlite3.Connection, table: str) -> None:
    sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    columns = [
        c
        for c in conn.execute(f"PRAGMA table_info({table})")
        if (c[3] and c[4] is None) or c[5]  # NOT NULL without a default, or the key
    ]
    names = ", ".join(c[1] for c in columns)
    marks = ", ".join("?" for _ in columns)
    values = [_value(conn, table, c, sql) for c in columns]
    conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", values)  # noqa: S608


def _keyring(conn: sqlite3.Connection, key: bytes) -> crypto.FieldCipher:
    keys = {p: bytes([i + 1]) * crypto.KEY_BYTES for i, p in enumerate(("field", "blind"))}
    for purpose, data_key in keys.items():
        conn.execute(
            "INSERT INTO keyring VALUES (?, 1, ?, ?)",
            (purpose, crypto.wrap_key(key, purpose, 1, data_key), time.time()),
        )
    return crypto.FieldCipher({1: keys["field"]}, keys["blind"])


def _message_by_hand(conn: sqlite3.Connection, cipher: crypto.FieldCipher, mid: str) -> None:
    now = time.time()
    known = {
        "id": mid,
        "priority": int(Priority.NORMAL),
        "state": "delivered",
        "to_ct": cipher.encrypt(NUMBER, mid, "to"),
        "to_index": cipher.blind_index(NUMBER),
        "body_ct": cipher.encrypt(BODY, mid, "body"),
        "encoding": "gsm7",
        "segments": 1,
        "created_at": now,
        "updated_at": now,
        "expires_at": now + 86400,
        "due_at": now,
    }
    columns = {c[1] for c in conn.execute("PRAGMA table_info(messages)")}
    assert set(known) <= columns
    names = ", ".join(known)
    conn.execute(
        f"INSERT INTO messages ({names}) VALUES ({', '.join('?' for _ in known)})",  # noqa: S608
        list(known.values()),
    )


async def _real_rows(path: Path, key: bytes, cipher: crypto.FieldCipher, mid: str) -> None:
    """The message (and an audit entry) written by the code's own writer where the schema
    at this version has what it writes; else the message by hand."""
    probe = sqlite3.connect(path)
    columns = {c[1] for c in probe.execute("PRAGMA table_info(messages)")}
    has_audit = probe.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit_log'").fetchone()
    probe.close()
    store = Store(path, key)
    store.cipher = cipher
    now = time.time()
    message = NewMessage(mid, None, Priority.NORMAL, NUMBER, BODY, "gsm7", 1, now, now + 86400)
    statements = store.insert_statements(message)
    written = re.search(r"INSERT INTO messages \(([^)]*)\)", statements[0][0])
    assert written is not None
    by_writer = {c.strip() for c in written.group(1).split(",")} <= columns
    writer = GroupCommitWriter(path)
    await writer.open()
    try:
        if by_writer:
            await writer.insert(statements)
            await writer.run(
                lambda c: c.execute("UPDATE messages SET state = 'delivered' WHERE id = ?", (mid,))
            )
        else:
            await writer.run(lambda c: _message_by_hand(c, cipher, mid))
        if has_audit:
            trail = AuditTrail(store, audit_key(key), SystemClock())
            await writer.run(lambda c: trail.append_in(c, now, "console", "upgrade_test"))
    finally:
        await writer.close()


def _counts(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in _tables(conn)}  # noqa: S608
    finally:
        conn.close()


@pytest.mark.parametrize("k", range(1, len(MIGRATIONS)))
async def test_upgrade_from_every_earlier_version_keeps_every_row(tmp_path: Path, k: int) -> None:
    config = make_config(tmp_path)
    key = crypto.read_master_key(config.master_key_path)
    conn = _build(config.db_path, k)
    cipher = _keyring(conn, key)
    conn.close()
    mid = "01UPGRADE0000000000000000"
    await _real_rows(config.db_path, key, cipher, mid)
    conn = sqlite3.connect(config.db_path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    for table in _by_dependency(conn, _tables(conn)):
        if table not in REAL:
            _generic_row(conn, table)
    conn.close()
    before = _counts(config.db_path)
    assert all(n >= 1 for n in before.values()), before

    gateway = await Gateway.open(config)  # migrates
    try:
        migrated = _counts(config.db_path)  # before start() adds the built-in templates
        await gateway.start(dispatch=False)
        stored = await gateway.store.records.message(mid)
        assert stored is not None
        assert (stored.to.open(), stored.body.open()) == (NUMBER, BODY)
        verdict = await gateway.audit.verify()
        assert verdict.ok, verdict.reason
    finally:
        await gateway.stop()

    assert {t: migrated[t] for t in before} == before
    conn = sqlite3.connect(config.db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
