"""The replies use cases every front end calls: list replies (the worklist is the open
ones), and resolve one, once, audited.

Numbers are shown masked, and only to callers that see masked numbers; a reply's text
is the inbound message's (read through the inbound reveal, audited there). On a
cluster the replies are the shared ones (`gateway/clinical/db.py`): a reply received
on any node is on every node's worklist, and resolved once.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from drivers.clock import Clock
from gateway.clinical.db import ClinicalDb, LocalClinicalDb
from gateway.consent.ledger import contact_row_id
from gateway.errors import ApiError
from gateway.replies import worklist_sql as sql
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
    def __init__(
        self, store: Store, clock: Clock, audit: AuditTrail, db: ClinicalDb | None = None
    ) -> None:
        """`db`: where the replies live (a cluster's shared tables)."""
        self._db = db or LocalClinicalDb(store)
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
        rows = await self._db.all(query, params)
        return await self._items(caller, [sql.row_of(r) for r in rows])

    async def of_appointment(self, caller: Caller, appointment_id: str) -> list[ReplyItem]:
        """One appointment's replies, oldest first (the panel's appointment page)."""
        query, params = sql.of_appointment(appointment_id)
        rows = await self._db.all(query, params)
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

        shared = self._db.shared  # the node's trail is its own store: after the commit

        def job(conn: sqlite3.Connection) -> tuple[bool, sql.ReplyRow | None]:
            done = sql.resolve(conn, reply_id, resolution, caller.actor, now)
            if done and not shared:
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

        done, row = await self._db.run(job, serial=False)
        if done and shared:
            await self._audit.record(
                caller.actor,
                "appointment_reply_resolved",
                "appointment_reply",
                reply_id,
                resolution=resolution,
            )
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
            numbers = await self._numbers(idxs)
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

    async def _numbers(self, idxs: list[bytes]) -> dict[bytes, str]:
        """These contacts' numbers, decrypted (shown masked)."""
        marks = ",".join("?" * len(idxs))
        rows = await self._db.all(
            f"SELECT idx, number_ct FROM contacts WHERE idx IN ({marks})",  # noqa: S608 - placeholders only
            idxs,
        )
        c = self._db.cipher
        return {
            bytes(r[0]): c.decrypt(bytes(r[1]), contact_row_id(bytes(r[0])), "number") for r in rows
        }
