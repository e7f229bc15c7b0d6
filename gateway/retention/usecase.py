"""Erasing one person: the use case the API, the panel and `smsgw erase` share.

Where the person's data is kept beyond the node's own store is the `SharedStore`'s
matter: nowhere on one node (`NOTHING_SHARED`), the cluster's PostgreSQL on a cluster
node (`gateway/cluster/erasure.py`: its shared messages, consent ledger, contacts and
reviews). The shared part goes first, then the node's own store in one transaction
with the one audit entry (every part's counts), so an entry means the whole erasure
is done; a crash in between leaves it to a repeat, which finds what is left (an
erasure is idempotent).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from drivers.clock import Clock
from gateway.models import new_message_id
from gateway.retention.erase import Erased, Person, erase
from gateway.store import space
from gateway.store.audit_log import AuditTrail
from gateway.store.store import Store

log = structlog.get_logger("smsgw.retention")


class SharedStore(Protocol):
    async def erase(self, person: Person, now: float, actor: str) -> Erased:
        """Erase `person` where this backend keeps them (SQLite's rules: only the
        suppression entry stays), in one transaction; counts and cancelled ids. Counts
        are named `shared_<kind>`, beside the node's own."""
        ...


class _NothingShared:
    async def erase(self, person: Person, now: float, actor: str) -> Erased:
        return Erased()


NOTHING_SHARED: SharedStore = _NothingShared()


@dataclass(frozen=True, slots=True)
class Erasure:
    reference: str  # `era_...`: the audit entry's target; the number is never kept with it
    counts: dict[str, int]


class Erasures:
    def __init__(
        self,
        store: Store,
        audit: AuditTrail,
        clock: Clock,
        forget: Callable[[str], None] | None = None,
        shared: SharedStore = NOTHING_SHARED,
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._forget = forget  # the scheduler's, when the daemon runs
        self._shared = shared

    async def erase(self, e164: str, actor: str) -> Erasure:
        """Erase every trace of `e164` (a valid E.164 number) but its suppression entry,
        audited in the node's own store's transaction; then its WAL is emptied."""
        store = self._store
        cipher = store.cipher
        assert cipher is not None, "store is not open"
        person = Person(e164, store.blind_index(e164))
        reference = "era_" + new_message_id()
        now = self._clock.time()
        audit = self._audit
        shared = await self._shared.erase(person, now, actor)

        def job(conn: sqlite3.Connection) -> Erased:
            out = erase(conn, cipher, person, now, actor)
            out.counts.update(shared.counts)
            out.cancelled.extend(shared.cancelled)
            audit.append_in(conn, now, actor, "erasure", "erasure", reference, **out.counts)
            return out

        out = await store.writer.run(job)
        if self._forget is not None:  # after the commit, on the loop
            for message_id in out.cancelled:
                self._forget(message_id)
        await store.writer.call_outside_transaction(space.checkpoint)
        log.info("erased", reference=reference, **out.counts)
        return Erasure(reference, out.counts)
