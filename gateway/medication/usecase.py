"""Medication schedules through the API: put (create, or change by external key), stop,
get, list; and the periodic top-up that plans dose notices ahead.

Put and stop are the same commands RDE and a discontinue map to, applied in one
writer job (on a cluster, one transaction on the shared tables, serialised across the
nodes: `gateway/clinical/db.py`); with an `Idempotency-Key` the answer is stored in
that same transaction, so a retried request gets the first answer and never a second
schedule. Audited like the consent use cases (ids only)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from drivers.clock import Clock
from gateway.clinical.commands import ApplyContext, ClinicalHooks, MappingError
from gateway.clinical.db import ClinicalDb, LocalClinicalDb
from gateway.clinical.notices import NoticeRow
from gateway.errors import ApiError
from gateway.logs import exception_summary
from gateway.medication import schedules
from gateway.medication.commands import Put, PutSchedule, StopSchedule
from gateway.medication.schedules import ScheduleRow
from gateway.results import settings
from gateway.results.usecase import api_context, api_error
from gateway.store.crypto import FieldCipher
from gateway.store.store import Store
from gateway.usecases.audit import AuditSink
from gateway.usecases.caller import Caller
from gateway.usecases.messages import IdempotencyKey

log = structlog.get_logger("smsgw.medication")
TOP_UP_RETRY = 60.0


@dataclass(frozen=True, slots=True)
class ScheduleView:
    row: ScheduleRow
    doses: list[NoticeRow]


@dataclass(frozen=True, slots=True)
class PutAnswer:
    status: int  # 201 created, 200 changed
    body: bytes


class Medications:
    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        audit: AuditSink,
        hooks: ClinicalHooks,
        site: settings.Settings,
        db: ClinicalDb | None = None,
    ) -> None:
        """`db`: where the schedules and their doses live (a cluster's shared tables)."""
        self._store, self._clock, self._audit, self._hooks = store, clock, audit, hooks
        self._db = db or LocalClinicalDb(store)
        self._site = site
        settings.configure(store, site)

    @property
    def site(self) -> settings.Settings:
        return self._site

    def _ctx(self, caller: Caller) -> ApplyContext:
        return api_context(self._store, self._clock.time(), caller, self._hooks, self._db)

    async def put(
        self,
        caller: Caller,
        command: PutSchedule,
        render: Callable[[Put], bytes],
        idempotency: IdempotencyKey | None = None,
    ) -> PutAnswer:
        """Put the schedule; `render` makes the answer's body inside the transaction
        (so the stored idempotent answer is exactly the one given)."""
        if not caller.may_send:
            raise ApiError(403, "forbidden", "a medication schedule needs the 'send' scope")
        if command.label is not None and not self._site.medication.allow_drug_names:
            raise ApiError(
                422,
                "drug_names_not_allowed",
                "this site keeps drug names out of messages (medication.allow_drug_names)",
                field="label",
            )
        ctx = self._ctx(caller)

        def job(conn: sqlite3.Connection) -> tuple[Put, bytes]:
            put = command.run(conn, ctx)
            if put is None:
                raise ApiError(
                    422, "no_number", "the patient has no number to text", field="patient"
                )
            if put.stopped:
                raise ApiError(
                    409,
                    "schedule_stopped",
                    "the schedule of this external key was stopped; use a new key",
                    field="external_key",
                )
            body = render(put)
            if idempotency is not None and caller.token_id is not None:
                sql, args = Store.idempotency_statement(
                    caller.token_id,
                    idempotency.key_hash,
                    idempotency.request_hash,
                    201 if put.created else 200,
                    body,
                    ctx.now,
                )
                conn.execute(sql, args)
            return put, body

        try:
            put, body = await self._db.run(job)
        except MappingError as e:
            raise api_error(e) from None
        action = "medication_schedule_created" if put.created else "medication_schedule_changed"
        await self._audit.record(caller.actor, action, "medication", put.row.id)
        return PutAnswer(201 if put.created else 200, body)

    async def stop(self, caller: Caller, schedule_id: str) -> ScheduleView:
        if not caller.may_send:
            raise ApiError(403, "forbidden", "stopping a schedule needs the 'send' scope")
        ctx = self._ctx(caller)
        command = StopSchedule(schedule_id=schedule_id, reason="stopped_by_api")

        def job(conn: sqlite3.Connection) -> tuple[ScheduleView, bool] | None:
            done = command.run(conn, ctx)
            if done is None:
                return None
            row, changed = done
            return ScheduleView(row, schedules.dose_notices(conn, ctx.cipher, row.id)), changed

        found = await self._db.run(job)
        if found is None:
            raise ApiError(404, "not_found", "no medication schedule with this id")
        view, changed = found
        if changed:
            await self._audit.record(
                caller.actor, "medication_schedule_stopped", "medication", schedule_id
            )
        return view

    async def get(self, caller: Caller, schedule_id: str) -> ScheduleView:
        del caller  # any `read` token: the view holds no PHI
        cipher = self._ctx_cipher()

        def job(conn: sqlite3.Connection) -> ScheduleView | None:
            row = schedules.get(conn, schedule_id)
            return (
                None
                if row is None
                else ScheduleView(row, schedules.dose_notices(conn, cipher, row.id))
            )

        found = await self._db.run(job, serial=False)
        if found is None:
            raise ApiError(404, "not_found", "no medication schedule with this id")
        return found

    async def page(
        self, caller: Caller, *, state: str | None, before: str | None, limit: int
    ) -> list[ScheduleRow]:
        del caller
        return await self._db.run(
            lambda conn: schedules.page(conn, state=state, before=before, limit=limit),
            serial=False,
        )

    def _ctx_cipher(self) -> FieldCipher:
        return self._db.cipher

    async def top_up_once(self) -> int:
        """Plan every active schedule's doses up to the horizon. A serial job: on a
        cluster every node runs this loop, and the clinical lock makes the second node's
        pass see the first one's `planned_until`, so each dose is planned once."""
        cipher = self._ctx_cipher()
        now = self._clock.time()
        return await self._db.run(lambda conn: schedules.top_up(conn, cipher, now, self._site))

    async def run_top_up(self) -> None:
        """The periodic top-up (`[medication] top_up_minutes`), for the gateway's life."""
        interval = self._site.medication.top_up_minutes * 60.0
        while True:
            try:
                planned = await self.top_up_once()
                if planned:
                    log.info("medication_doses_planned", count=planned)
                delay = interval
            except Exception as e:  # the store is struggling: try again soon, not never
                log.error("medication_top_up_failed", error=exception_summary(e))
                delay = min(interval, TOP_UP_RETRY)
            await self._clock.sleep(delay)
