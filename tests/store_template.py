"""A new store in a test is a page copy of the first one migrated in this process.

Every test that opens a gateway makes a new SQLite store, and `Store.open` runs all the
migrations on it: 40 transactions of DDL, 70-190 ms a store (a sixth of the time of a
file of store tests). The result is the same file every time, so the first new store of a
test process is migrated for real and kept in memory, and each later one is filled from
it with SQLite's backup API (a few milliseconds): the same pages, header (user_version,
auto_vacuum, WAL) included. Only `Store.open`'s `migrate` is replaced, and only on a file
with no schema yet: a store of an older version (the upgrade tests) and a direct
`schema.migrate(conn)` still run every statement, and so does every `smsgw` child.
`SMSGW_TEST_MIGRATE_EACH=1 pytest` migrates every new store for real.
"""

from __future__ import annotations

import os
import sqlite3
import threading

from gateway.store import schema
from gateway.store import store as store_module

# One template per page size: a test may make a store as older versions did (4096-byte
# pages), and SQLite cannot copy pages of another size into a WAL database.
_templates: dict[int, sqlite3.Connection] = {}
_lock = threading.Lock()


def _is_new(conn: sqlite3.Connection) -> bool:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    return version == 0 and conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None


def migrate_from_template(conn: sqlite3.Connection) -> int:
    if not _is_new(conn):
        return schema.migrate(conn)
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    with _lock:
        template = _templates.get(page_size)
        if template is None:
            version = schema.migrate(conn)
            template = sqlite3.connect(":memory:", check_same_thread=False)
            conn.backup(template)
            _templates[page_size] = template
            return version
        template.backup(conn)
    # Migration 34's epoch is random() per store: a copy must not share its source's.
    conn.execute("UPDATE consent_epoch SET value = random() WHERE id = 0")
    return len(schema.MIGRATIONS)


def install() -> None:
    if os.environ.get("SMSGW_TEST_MIGRATE_EACH") == "1":
        return
    store_module.migrate = migrate_from_template  # type: ignore[assignment]
