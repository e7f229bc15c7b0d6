"""The replies use cases every front end calls: list replies (the worklist is the open
ones), and resolve one, once, audited.

Numbers are shown masked, and only to callers that see masked numbers; a reply's text
is the inbound message's (read through the inbound reveal, audited there).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from drivers.clock import Clock
from gateway.errors import ApiError
from gateway.replies import worklist_sql as sql
from gateway.store import consent_sql
from gateway.store.audit_log import AuditTrail
from gateway.store.store import Store
from gateway.usecases.caller import Caller

STATES = ("open", "done", "resolved")
MAX_LIST = 500


@dataclass(frozen=True, slots=True)
class ReplyItem:
    id: str
    inbound_id: str
    received_at: float
    intent: str
    outcome: str
    state: str
    appointment_id: str | None
    by_code: bool
    writeback_id: str | None
    number_masked: str | None
    resolved_at: float | None
    resolved_by: str | None
    resolution: str | None


class Replies:
    def __init__(self, store: Store, clock: Clock, audit: AuditTrail) -> None:
        self._store = store
        self._clock = clock
        self._audit = audit

    async def listed(self, caller: Caller, state: str | None, limit: int = 100) -> list[ReplyItem]:
        """Replies in `state` (`open`: the worklist, oldest first), else all, newest first."""
        if state is not None and state not in STATES:
            raise ApiError(
                400, "invalid_query", f"state: one of {', '.join(STATES)}", field="state"
            )
        if not 1 <= limit <= MAX_LIST:
            raise ApiError(400, "invalid_query", f"limit: 1 to {MAX_LIST}", field="limit")
        query, params = sql.listed(state, limit)
        rows = await self._store.reader.all(query, params)
        return await self._items(caller, [sql.row_of(r) for r in rows])

    async def of_appointment(self, caller: Caller, appointment_id: str) -> list[ReplyItem]:
        """One appointment's replies, oldest first (the panel's appointment page)."""
        query, params = sql.of_appointment(appointment_id)
        rows = await self._store.reader.all(query, params)
        return await self._items(caller, [sql.row_of(r) for r in rows])

    async def resolve(self, caller: Caller, reply_id: str, resolution: str) -> ReplyItem:
        """Take an open reply off the worklist (`handled` or `dismissed`), once: a
        second resolve answers 409 `not_open`, an unknown id 404 `not_found`."""
        if not caller.may_send:
            raise ApiError(403, "forbidden", "resolving a reply needs the 'send' scope")
        if resolution not in sql.RESOLUTIONS:
            raise ApiError(
                422,
                "invalid_field",
                f"resolution: one of {', '.join(sql.RESOLUTIONS)}",
                field="resolution",
            )
        now = self._clock.time()

        def job(conn: sqlite3.Connection) -> tuple[bool, sql.ReplyRow | None]:
            done = sql.resolve(conn, reply_id, resolution, caller.actor, now)
            if done:
                self._audit.append_in(
                    conn,
                    now,
                    caller.actor,
                    "appointment_reply_resolved",
                    "appointment_reply",
                    reply_id,
                    resolution=resolution,
                )
            return done, sql.one(conn, reply_id)

        done, row = await self._store.writer.run(job)
        if row is None:
            raise ApiError(404, "not_found", "no reply with this id")
        if not done:
            raise ApiError(409, "not_open", "this reply is not on the worklist (resolved, or done)")
        (item,) = await self._items(caller, [row])
        return item

    async def _items(self, caller: Caller, rows: list[sql.ReplyRow]) -> list[ReplyItem]:
        numbers: dict[bytes, str] = {}
        if caller.sees_masked and rows:
            idxs = list(dict.fromkeys(r.contact_idx for r in rows))
            numbers = await consent_sql.contact_numbers(self._store, idxs)
        return [
            ReplyItem(
                r.id,
                r.inbound_id,
                r.created_at,
                r.intent,
                r.outcome,
                r.state,
                r.appointment_id,
                r.by_code,
                r.writeback_id,
                caller.mask(numbers[r.contact_idx]) if r.contact_idx in numbers else None,
                r.resolved_at,
                r.resolved_by,
                r.resolution,
            )
            for r in rows
        ]
