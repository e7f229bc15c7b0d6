"""Schema migrations, applied in order and counted by `PRAGMA user_version`.

Personal fields are `*_ct` columns (AES-GCM ciphertext, see `crypto.py`) and
`to_index` (the keyed blind index). Nothing else in the schema may hold a phone
number or a message body. The `messages` table is the queue: the scheduler's memory
is only a cache of its `queued` and `scheduled` rows, rebuilt at start. The migrations
themselves are in three modules by era (`migrations_core`, `_features`, `_later`).
"""

from __future__ import annotations

import sqlite3

from gateway.store.migrations_core import CORE
from gateway.store.migrations_features import FEATURES
from gateway.store.migrations_later import LATER

MIGRATIONS: tuple[str, ...] = (*CORE, *FEATURES, *LATER)


def _statements(script: str) -> list[str]:
    """Split a migration into statements; a trigger body's `;` does not end one."""
    statements, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n\t;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \n\t;"):
        raise ValueError("a migration ends in an incomplete statement")
    return statements


class SchemaTooNew(sqlite3.DatabaseError, RuntimeError):
    """The store was written by a newer smsgw. A `DatabaseError`, so start-up
    (`gateway/startup.py`) reports it as the store it cannot open, in one line."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"the store has schema version {found}, newer than this smsgw "
            f"({len(MIGRATIONS)}); install the smsgw that wrote it, or restore a backup"
            " taken before the upgrade (docs/ops/upgrades.md)"
        )
        self.found = found


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; returns the version now in force."""
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > len(MIGRATIONS):
        raise SchemaTooNew(current)
    for version in range(current + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)
