"""`POST /events/results-available` for labs without HL7: the same `ResultsAvailable`
command an ORU^R01 maps to, applied in one writer job (on a cluster, one transaction on
the shared tables, serialised across the nodes: `gateway/clinical/db.py`), audited."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from drivers.clock import Clock
from gateway.clinical.commands import (
    ERR_REQUIRED_FIELD_MISSING,
    ERR_UNKNOWN_KEY,
    ApplyContext,
    ClinicalHooks,
    MappingError,
)
from gateway.clinical.db import ClinicalDb, LocalClinicalDb
from gateway.clinical.profile import API_SOURCE, InterfaceProfile
from gateway.errors import ApiError
from gateway.results.commands import ResultsAvailable
from gateway.results.events import Outcome
from gateway.store.store import Store
from gateway.usecases.audit import AuditSink
from gateway.usecases.caller import Caller


@dataclass(frozen=True, slots=True)
class Recorded:
    outcome: str  # notice | joined | no_contact | duplicate
    events: tuple[str, ...]
    notice_id: str | None
    due_at: float | None


def api_error(e: MappingError) -> ApiError:
    """A command's refusal as the API's error (its text never quotes a value)."""
    if e.code == ERR_UNKNOWN_KEY:
        return ApiError(404, "unknown_patient", e.text, field="patient")
    if e.location == "time_zone":
        code = "time_zone_required" if e.code == ERR_REQUIRED_FIELD_MISSING else "invalid_time_zone"
        return ApiError(422, code, e.text, field="time_zone")
    if e.location == "end_date":
        return ApiError(422, "invalid_dates", e.text, field="end_date")
    return ApiError(422, "invalid_request", e.text, field=e.location)


def api_context(
    store: Store, now: float, caller: Caller, hooks: ClinicalHooks, db: ClinicalDb
) -> ApplyContext:
    """The context of an API command; its rows are sealed with `db`'s cipher (the
    shared keyring's on a cluster)."""
    return ApplyContext(
        now,
        API_SOURCE,
        caller.actor,
        InterfaceProfile(API_SOURCE),
        store,
        hooks,
        sealer=db.cipher,
    )


class ResultEvents:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        audit: AuditSink,
        hooks: ClinicalHooks,
        db: ClinicalDb | None = None,
    ):
        """`db`: where the events and notices live (a cluster's shared tables)."""
        self._store, self._clock, self._audit, self._hooks = store, clock, audit, hooks
        self._db = db or LocalClinicalDb(store)

    async def results_available(self, caller: Caller, command: ResultsAvailable) -> Recorded:
        if not caller.may_send:
            raise ApiError(403, "forbidden", "recording a result event needs the 'send' scope")
        ctx = api_context(self._store, self._clock.time(), caller, self._hooks, self._db)

        def job(conn: sqlite3.Connection) -> tuple[Outcome, float | None]:
            outcome = command.run(conn, ctx)
            due = None
            if outcome.notice_id is not None:
                r = conn.execute(
                    "SELECT due_at FROM clinical_notices WHERE id = ?", (outcome.notice_id,)
                ).fetchone()
                due = float(r[0])
            return outcome, due

        try:
            outcome, due = await self._db.run(job)
        except MappingError as e:
            raise api_error(e) from None
        for event_id in outcome.new:
            await self._audit.record(
                caller.actor, "result_event_recorded", "clinical_event", event_id
            )
        return Recorded(outcome.outcome or "duplicate", outcome.new, outcome.notice_id, due)
