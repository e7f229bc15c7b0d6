"""Erasing one person: the use case the API, the panel and `smsgw erase` share."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from drivers.clock import Clock
from gateway.models import new_message_id
from gateway.retention.erase import Erased, Person, erase
from gateway.store import space
from gateway.store.audit_log import AuditTrail
from gateway.store.store import Store

log = structlog.get_logger("smsgw.retention")


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
    ) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self._forget = forget  # the scheduler's, when the daemon runs

    async def erase(self, e164: str, actor: str) -> Erasure:
        """Erase every trace of `e164` (a valid E.164 number) but its suppression entry,
        audited in the same transaction; then the WAL is emptied."""
        store = self._store
        cipher = store.cipher
        assert cipher is not None, "store is not open"
        person = Person(e164, store.blind_index(e164))
        reference = "era_" + new_message_id()
        now = self._clock.time()
        audit = self._audit

        def job(conn: sqlite3.Connection) -> Erased:
            out = erase(conn, cipher, person, now, actor)
            audit.append_in(conn, now, actor, "erasure", "erasure", reference, **out.counts)
            return out

        out = await store.writer.run(job)
        if self._forget is not None:  # after the commit, on the loop
            for message_id in out.cancelled:
                self._forget(message_id)
        await store.writer.call_outside_transaction(space.checkpoint)
        log.info("erased", reference=reference, **out.counts)
        return Erasure(reference, out.counts)
