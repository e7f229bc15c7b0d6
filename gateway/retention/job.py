"""The retention job: the sweep (`sweep.py`) in bounded writer transactions until
nothing is due, then free pages handed back and the WAL emptied. Run by the daemon's
housekeeping (`[retention] enabled`) and by `smsgw retention run`; audited with counts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from drivers.clock import Clock
from gateway.retention import sweep
from gateway.retention.settings import RetentionConfig
from gateway.store import space
from gateway.store.audit_log import AuditTrail
from gateway.store.store import Store

log = structlog.get_logger("smsgw.retention")

Progress = Callable[[int, int, str], None]
MAX_VACUUM_STEPS = 10_000


@dataclass(frozen=True, slots=True)
class Status:
    due: dict[str, int]  # rows each step would change now
    free_pages: int
    auto_vacuum: str  # none, full or incremental


@dataclass(frozen=True, slots=True)
class Outcome:
    removed: dict[str, int]
    pages_freed: int


def _no_progress(done: int, total: int, what: str) -> None:
    del done, total, what


class Retention:
    def __init__(
        self, store: Store, config: RetentionConfig, clock: Clock, audit: AuditTrail
    ) -> None:
        self._store = store
        self._config = config
        self._clock = clock
        self._audit = audit

    async def status(self) -> Status:
        now = self._clock.time()
        config = self._config

        def read(conn: sqlite3.Connection) -> Status:
            due = sweep.due_counts(conn, config, now)
            free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            mode = int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
            return Status(due, free, ("none", "full", "incremental")[mode])

        # On the writer's connection (it waits its turn): the counts are one snapshot.
        return await self._store.writer.run(read)

    async def run(
        self, actor: str, progress: Progress = _no_progress, *, audit_empty: bool = True
    ) -> Outcome:
        """Remove everything due now, batch by batch; `audit_empty=False` (the hourly
        run) leaves no audit entry when nothing was due."""
        now = self._clock.time()
        total = sum((await self.status()).due.values())
        cipher = self._store.cipher
        assert cipher is not None, "store is not open"
        config = self._config
        removed = dict.fromkeys(sweep.STEPS, 0)
        progress(0, total, "retention")
        while True:
            batch = await self._store.writer.run(
                lambda conn: sweep.sweep_batch(conn, cipher, config, now)
            )
            for step, n in batch.items():
                removed[step] += n
            progress(sum(removed.values()), total, "retention")
            if not any(batch.values()):
                break
        freed = await self.reclaim()
        outcome = Outcome(removed, freed)
        if audit_empty or any(removed.values()):
            await self._audit.record(
                actor, "retention_run", None, None, **removed, pages_freed=freed
            )
        log.info("retention_run", pages_freed=freed, **removed)
        return outcome

    async def reclaim(self) -> int:
        """Free pages back to the file system a step at a time (other writes go in
        between), then the WAL checkpointed and emptied; the pages freed."""
        writer = self._store.writer
        first = remaining = await writer.call_outside_transaction(space.reclaim_step)
        for _ in range(MAX_VACUUM_STEPS):
            if not remaining:
                break
            remaining = await writer.call_outside_transaction(space.reclaim_step)
            if remaining >= first:  # auto_vacuum is off (no VACUUM yet): nothing moves
                break
        await writer.call_outside_transaction(space.checkpoint)
        return max(first - remaining, 0)
