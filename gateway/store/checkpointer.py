"""WAL checkpoints on a thread of their own, so that commits do not wait for them.

SQLite's automatic checkpoint runs inside the commit that crosses `wal_autocheckpoint`
frames, i.e. in the writer thread, and every accept or claim behind that commit waits
for it (the copy of every page changed since the last checkpoint, then an fsync of the
database file). A checkpoint writes each page once however often it changed, so a longer
interval writes the hot pages (index tails, the newest rows) into the file less often;
in the writer thread a longer interval also meant longer stalls (bench/README.md, "Disk
writes"). Here the writer's connection has `wal_autocheckpoint = 0` and this thread, on
a connection of its own, runs `PRAGMA wal_checkpoint(PASSIVE)` once `frames` frames wait
to be copied. PASSIVE takes no lock a committing writer needs: commits go on meanwhile.

How many frames wait is read after each commit from the wal-index header in the `-shm`
file (https://www.sqlite.org/walformat.html, "the wal-index header": `mxFrame` at
offset 16, the checkpoint's `nBackfill` at offset 96), a 100-byte read. SQLite restarts
the WAL from its beginning only when a write transaction starts with every frame copied,
and syncs the database file only after a checkpoint that copied them all. Frames
committed while a checkpoint runs are left over: up to `PASSES` passes copy them, then
this thread syncs the database file itself. If the WAL still passed twice the interval,
`tail_due` has the writer copy the few left before its next transaction, so that the
WAL restarts and the file stays bounded (`journal_size_limit` trims it after an
unusual growth, e.g. a reader holding an old snapshot).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import struct
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

log = structlog.get_logger("smsgw.store")

WAL_INDEX_VERSION = 3007000
_U32 = struct.Struct("=I")  # the wal-index is in the machine's own byte order
_HEADER_BYTES = 100
# PASSIVE checkpoints in a row while commits keep adding frames: each later one copies
# only the frames of the commits made during the one before, so it is short, and one
# that copies the whole WAL lets the writer restart it from the beginning.
PASSES = 3


def wal_frames(shm_fd: int) -> tuple[int, int] | None:
    """(frames in the WAL, frames already copied into the database) from the wal-index;
    None when it cannot be read as the documented format."""
    try:
        data = os.pread(shm_fd, _HEADER_BYTES, 0)
    except OSError:
        return None
    if len(data) < _HEADER_BYTES or _U32.unpack_from(data, 0)[0] != WAL_INDEX_VERSION:
        return None
    return _U32.unpack_from(data, 16)[0], _U32.unpack_from(data, 96)[0]


class Checkpointer:
    def __init__(self, path: Path, frames: int) -> None:
        self._path = path
        self.frames = frames
        self._shm_fd: int | None = None
        self._conn: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="smsgw-db-checkpoint")
        self._running: asyncio.Future[None] | None = None
        self._paused = 0
        self.tail_due = False  # set by `poke`
        self.checkpoints = 0  # run by this thread (for tests and benchmarks)

    def open(self) -> bool:
        """False if the wal-index cannot be read (then the writer checkpoints itself)."""
        try:
            self._shm_fd = os.open(f"{self._path}-shm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return False
        if wal_frames(self._shm_fd) is None:
            self._close_fd()
            return False
        self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 10000")
        return True

    def frames_now(self) -> tuple[int, int] | None:
        return None if self._shm_fd is None else wal_frames(self._shm_fd)

    def poke(self) -> None:
        """After each commit, on the loop (one call, one 100-byte read: it is on every
        accept's path): start a checkpoint if enough frames wait, and note whether the
        writer should copy the frames the last one left over before its next transaction
        (`tail_due`: the WAL has passed twice the interval without restarting)."""
        self.tail_due = False
        conn = self._conn
        if self._running is not None or self._paused or conn is None or self._shm_fd is None:
            return
        try:
            data = os.pread(self._shm_fd, _HEADER_BYTES, 0)
        except OSError:
            return
        if len(data) < _HEADER_BYTES or _U32.unpack_from(data, 0)[0] != WAL_INDEX_VERSION:
            return
        frames, copied = _U32.unpack_from(data, 16)[0], _U32.unpack_from(data, 96)[0]
        if frames - copied >= self.frames:
            loop = asyncio.get_running_loop()
            self._running = loop.run_in_executor(self._executor, self._checkpoint, conn)
            self._running.add_done_callback(self._done)
        else:
            self.tail_due = frames >= 2 * self.frames and 0 < copied < frames

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        for _ in range(PASSES):  # the later passes copy what commits added meanwhile
            _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if copied >= frames:
                break
        # SQLite syncs the database file only after a checkpoint that copied the whole
        # WAL; one that commits overtook leaves its pages unsynced until then, and that
        # one (often the writer's tail) would pay for all of them. Synced here instead.
        fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def _done(self, fut: asyncio.Future[None]) -> None:
        self._running = None
        self.checkpoints += 1
        if not fut.cancelled() and (error := fut.exception()) is not None:
            # The next poke tries again; the writer's own commits report a failing disk.
            log.warning("checkpoint_failed", error=type(error).__name__)

    async def idle(self) -> None:
        """Until the checkpoint under way, if any, has ended (its failure is logged)."""
        if self._running is not None:
            await asyncio.wait([self._running])

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """No checkpoint runs on this thread meanwhile (a TRUNCATE checkpoint in the
        writer, which would find this one busy and leave the WAL as it was)."""
        self._paused += 1
        try:
            await self.idle()
            yield
        finally:
            self._paused -= 1

    async def close(self) -> None:
        await self.idle()
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)
        self._close_fd()

    def _close_fd(self) -> None:
        if self._shm_fd is not None:
            os.close(self._shm_fd)
            self._shm_fd = None
