"""The retention job: the sweep in bounded transactions until nothing is due, then
the node's own free pages handed back and its WAL emptied. Run by the daemon's
housekeeping (`[retention] enabled`) and by `smsgw retention run`; audited with counts.

Every store that keeps data is a `Sweep`: the node's own SQLite store (`LocalSweep`,
`sweep.py` in its writer's transactions) and, on a cluster node, what the nodes share
in PostgreSQL (`gateway/cluster/retention.py`, counts named `shared_<step>`; nothing
on one node: `NOTHING_SHARED`). A run sweeps both and is audited once, on the node
that ran it, with what this node removed in each.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

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


class Sweep(Protocol):
    """One backend's retention sweep under `[retention]`'s rules (`sweep.py`)."""

    async def due(self, now: float) -> dict[str, int]:
        """Rows each step would change now, read in one snapshot."""
        ...

    async def sweep_batch(self, now: float) -> dict[str, int]:
        """One bounded batch (at most `batch` rows a step) in one transaction; the rows
        each step changed (all 0: nothing left that this caller may take)."""
        ...


class LocalSweep:
    """`Sweep` on the node's own SQLite store, on its writer's connection."""

    def __init__(self, store: Store, config: RetentionConfig) -> None:
        self._store = store
        self._config = config

    async def due(self, now: float) -> dict[str, int]:
        config = self._config
        # On the writer's connection (it waits its turn): the counts are one snapshot.
        return await self._store.writer.run(lambda conn: sweep.due_counts(conn, config, now))

    async def sweep_batch(self, now: float) -> dict[str, int]:
        cipher = self._store.cipher
        assert cipher is not None, "store is not open"
        config = self._config
        return await self._store.writer.run(
            lambda conn: sweep.sweep_batch(conn, cipher, config, now)
        )


class _NothingShared:
    async def due(self, now: float) -> dict[str, int]:
        return {}

    async def sweep_batch(self, now: float) -> dict[str, int]:
        return {}


NOTHING_SHARED: Sweep = _NothingShared()


class Retention:
    def __init__(
        self,
        store: Store,
        config: RetentionConfig,
        clock: Clock,
        audit: AuditTrail,
        shared: Sweep = NOTHING_SHARED,
    ) -> None:
        self._store = store
        self._clock = clock
        self._audit = audit
        self._sweeps = (LocalSweep(store, config), shared)

    async def status(self) -> Status:
        return await self._status(self._clock.time())

    async def _status(self, now: float) -> Status:
        due: dict[str, int] = {}
        for each in self._sweeps:
            due.update(await each.due(now))

        def space_left(conn: sqlite3.Connection) -> tuple[int, str]:
            free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
            mode = int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
            return free, ("none", "full", "incremental")[mode]

        free, mode = await self._store.writer.run(space_left)
        return Status(due, free, mode)

    async def run(
        self, actor: str, progress: Progress = _no_progress, *, audit_empty: bool = True
    ) -> Outcome:
        """Remove everything due now, batch by batch; `audit_empty=False` (the hourly
        run) leaves no audit entry when nothing was due."""
        now = self._clock.time()
        due = (await self._status(now)).due
        total = sum(due.values())
        removed = dict.fromkeys(due, 0)
        progress(0, total, "retention")
        for each in self._sweeps:
            while True:
                batch = await each.sweep_batch(now)
                for step, n in batch.items():
                    removed[step] = removed.get(step, 0) + n
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
