"""The store's file: overwriting what is deleted, giving space back, and probing a
full disk for room.

`secure_delete` makes SQLite overwrite deleted content with zeros (in the page, and
freed pages), so a removed body is not left in free space. `auto_vacuum = INCREMENTAL`
lets the retention job hand free pages back to the file system
(`PRAGMA incremental_vacuum`). A store made before these were set gets them with one
`VACUUM` at its next start (it rewrites the file: it needs free space about the size
of the store, and time; if it fails, start-up goes on and it is tried again next time).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import structlog

from gateway import systemd
from gateway.store_failure import NoRoom, storage_failure

log = structlog.get_logger("smsgw.store")

INCREMENTAL = 2
VACUUM_STEP = 2000  # free pages handed back per writer turn
# Room the probe wants before it calls a full store writable again: a write that fits
# in a page SQLite already has could succeed with the disk still full.
PROBE_BYTES = 1 << 20
# The one VACUUM of an older store, told to systemd as its start-up allowance.
VACUUM_SLACK_S = 60.0
VACUUM_SLOW_BYTES_PER_S = 2_000_000  # a slow SD card reading and writing the copy


def secure_file(conn: sqlite3.Connection) -> None:
    """On the writer's connection, before migrations: overwrite deleted content, and
    switch the file to incremental auto-vacuum (one VACUUM for an existing store)."""
    conn.execute("PRAGMA secure_delete = ON")
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == INCREMENTAL:
        return
    # In WAL mode even a new, empty file takes the setting only through VACUUM.
    conn.execute(f"PRAGMA auto_vacuum = {INCREMENTAL}")
    size = int(conn.execute("PRAGMA page_count").fetchone()[0]) * int(
        conn.execute("PRAGMA page_size").fetchone()[0]
    )
    # Rewriting a large store upgraded from before this may outlast systemd's start
    # timeout (90 s) on an SD card: ask for the time a slow card needs.
    seconds = VACUUM_SLACK_S + size / VACUUM_SLOW_BYTES_PER_S
    systemd.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")
    log.info("store_vacuuming", bytes=size, allowed_seconds=round(seconds))
    try:
        conn.execute("VACUUM")
    except sqlite3.Error as e:
        log.warning("store_vacuum_failed", error=storage_failure(e) or type(e).__name__)
        return
    log.info("store_vacuumed", auto_vacuum="incremental")


def reclaim_step(conn: sqlite3.Connection) -> int:
    """Hand up to `VACUUM_STEP` free pages back; the free pages there were before."""
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    if free:
        conn.execute(f"PRAGMA incremental_vacuum({VACUUM_STEP})").fetchall()
    return free


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the file and empty it, so removed values are not left there."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def probe(conn: sqlite3.Connection, directory: Path, now: float) -> None:
    """Raise `NoRoom` unless the file may grow by `PROBE_BYTES` (on the file system and
    under `max_page_count`), then make one small real write."""
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    cap = int(conn.execute("PRAGMA max_page_count").fetchone()[0])
    fs = os.statvfs(directory)
    if (cap - pages) * page < PROBE_BYTES or fs.f_bavail * fs.f_frsize < PROBE_BYTES:
        raise NoRoom("too little room for the store to grow")
    conn.execute("INSERT OR REPLACE INTO store_probe VALUES (1, ?)", (now,))
