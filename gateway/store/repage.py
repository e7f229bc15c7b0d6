"""`smsgw store repage`: give a store made before 2 KiB pages the page size new stores
get (`writer.PAGE_SIZE`), offline.

A store keeps the page size it was made with; each commit writes every page it touched
whole, so a 4 KiB store writes more per message than a new one (`bench/diskwrites.py`).
SQLite changes the page size only by rewriting the file with `VACUUM`, and not in WAL
mode: the WAL is checkpointed into the file and emptied, the file leaves WAL mode for
the rewrite (a crash meanwhile is rolled back from the rollback journal) and goes back
to it. It needs free space of about twice the store (the rewritten copy and the
journal) and time in proportion to the store, so it is a command an operator runs with
the gateway stopped, not part of start-up.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gateway.store.writer import PAGE_SIZE


class NoRoomToRepage(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Repaged:
    before: int  # page size, bytes
    after: int
    bytes_before: int
    bytes_after: int


def page_size(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA page_size").fetchone()[0])


def repage(path: Path, size: int = PAGE_SIZE) -> Repaged:
    """Rewrite the store at `path` with `size`-byte pages (nothing to do if it has them).
    The caller holds the data directory's lock (no gateway runs on it)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        before = page_size(conn)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        used = path.stat().st_size
        if before == size:
            return Repaged(before, before, used, used)
        free = os.statvfs(path.parent)
        if free.f_bavail * free.f_frsize < 2 * used:
            raise NoRoomToRepage(
                f"the rewrite needs about {2 * used:,} bytes free beside {path} (twice the"
                " store); free some space and run it again"
            )
        conn.execute("PRAGMA journal_mode = DELETE").fetchall()
        conn.execute("PRAGMA secure_delete = ON")  # as the gateway keeps the file
        conn.execute(f"PRAGMA page_size = {size}")
        conn.execute("VACUUM")
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        return Repaged(before, page_size(conn), used, path.stat().st_size)
    finally:
        conn.close()
