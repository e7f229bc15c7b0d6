"""The notice runner: every due clinical notice becomes a message, or is skipped once.

Theory of operation. One background task (started by `Gateway.start` with its other
loops) runs passes. A pass is one writer job: it reads the notices due by now
(`notices.due`), and for each, inside its own savepoint:

1. past its `expires_at` (a reminder's is the appointment's start): skipped `expired`;
2. the kind's recheck (`notices.recheck`: still booked, same start and version, ...)
   says no: skipped with its reason;
3. the contact's number (`contacts.number_ct`) is gone: skipped `no_number`;
4. rendered through the `Renderer` in the notice's language (no template in any
   language of the chain: skipped `template_missing`);
5. accepted through the application layer (`Messages.accept_within`) as the system
   caller `system:notices`, with the notice's purpose, class, `category` = its kind and
   `reference` = its id, so consent, quiet hours and caps decide as for every message
   (a blocked message is stored `blocked`; the notice still goes `queued` with its
   message id, and `reason` records what the policy answered, e.g. `blocked:opted_out`);
6. `notices.finish(..., QUEUED, message_id)`: if the notice already left `pending`
   (another pass, a re-plan), the savepoint rolls back, message included. No message
   exists without its notice, and no notice is sent twice.

Every step's skip is itself a `finish`, so it happens once. What the gateway cannot do
now (shutting down, the store failing) leaves the notice pending for the next pass.
After the commit the new messages are handed to the scheduler. Between passes the task
sleeps until the next due notice (`notices.next_due`), at most `MAX_SLEEP`, or until
the planner rings the bell or any part plans a notice (`notices.planned()` grew: one
that may be due sooner); sleeps go
through the gateway's clock, so tests move a `FakeClock` and the pass runs.

On a cluster the notices are shared and every node runs a pass
(`gateway/cluster/notice_runner.py`): steps 1-4 are the same (`_ready`); a pass
claims its notices `FOR UPDATE SKIP LOCKED` and accepts their messages in its
PostgreSQL transaction instead.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from drivers.clock import Clock, wait_event
from gateway.clinical import notices
from gateway.clinical.db import ClinicalDb, LocalClinicalDb
from gateway.clinical.notices import NoticeRow, NoticeState
from gateway.clinical.rendering import Renderer, TemplateMissing
from gateway.errors import ApiError
from gateway.intake import Prepared, SendRequest
from gateway.logs import exception_summary
from gateway.metrics import Metrics
from gateway.store.consent_sql import number_of
from gateway.store.store import Store
from gateway.usecases.caller import Caller
from gateway.usecases.messages import Messages

log = structlog.get_logger("smsgw.notices")

SYSTEM = Caller(
    actor="system:notices", token_id=None, sees_all=True, may_send=True, may_read_phi=False
)
BATCH = 200  # notices per pass (one transaction)
MAX_SLEEP = 60.0  # notices planned by parts that ring no bell go out at most this late
RETRY = 30.0  # after a pass failed (the store struggling)


class _Gone(Exception):
    """The notice left `pending` while this pass sent it: roll its message back."""


@dataclass(slots=True)
class PassResult:
    """What one pass did: counts by outcome (`queued`, `skipped:<reason>`, `gone`), and
    the messages it stored."""

    outcomes: Counter[str] = field(default_factory=Counter)
    prepared: list[Prepared] = field(default_factory=list)
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def messages(self) -> list[str]:
        return [p.message.id for p in self.prepared]

    @property
    def queued(self) -> int:
        return self.outcomes["queued"]


class NoticeRunner:
    def __init__(
        self,
        store: Store,
        messages: Messages,
        renderer: Renderer,
        clock: Clock,
        *,
        horizon: float,
        bell: threading.Event | None = None,
        metrics: Metrics | None = None,
        db: ClinicalDb | None = None,
    ) -> None:
        """`horizon`: how far ahead a message may expire (`queue.max_schedule_days`);
        `db`: where the notices live (the store's own by default)."""
        self._store = store
        self._db = db or LocalClinicalDb(store)
        self._messages = messages
        self._renderer = renderer
        self._clock = clock
        self._horizon = horizon
        self.bell = bell or threading.Event()
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._running = False
        self._planned = notices.planned()

    def wake(self) -> None:
        self._wake.set()

    def _after_commit(self) -> None:
        if self.bell.is_set():
            self.bell.clear()
            self._wake.set()
        if (planned := notices.planned()) != self._planned:  # planned by any part
            self._planned = planned
            self._wake.set()

    async def run(self) -> None:
        """Passes until cancelled (the gateway's stop cancels it with its other loops)."""
        self._db.after_commit.append(self._after_commit)
        try:
            while True:
                self._wake.clear()
                try:
                    result = await self.run_once()
                    if result.outcomes:
                        log.info("notices_pass", **dict(result.outcomes))
                    next_due = await self._db.run(notices.next_due, serial=False)
                    delay = MAX_SLEEP if next_due is None else next_due - self._clock.time()
                except Exception as e:  # the store is struggling: try again, not never
                    log.error("notices_pass_failed", error=exception_summary(e))
                    delay = RETRY
                await wait_event(self._clock, self._wake, min(max(delay, 0.0), MAX_SLEEP))
        finally:
            self._db.after_commit.remove(self._after_commit)

    async def run_once(self) -> PassResult:
        """One pass over the notices due now; returns once its transaction committed."""
        now = self._clock.time()
        result: PassResult = await self._store.writer.run(lambda conn: self._pass(conn, now))
        self._passed(result)
        return result

    def _passed(self, result: PassResult) -> None:
        """After a pass committed: its messages to the scheduler, its counts."""
        self._messages.hand_over(result.prepared)
        if self._metrics is not None:
            for (kind, outcome), count in result.by_kind.items():
                self._metrics.notices.labels(kind, outcome).inc(count)

    def _pass(self, conn: sqlite3.Connection, now: float) -> PassResult:
        result = PassResult()
        for row in notices.due(conn, self._db.cipher, now, BATCH):
            conn.execute("SAVEPOINT notice")
            try:
                outcome, prepared = self._one(conn, row, now)
            except _Gone:
                conn.execute("ROLLBACK TO notice")
                outcome, prepared = "gone", None
            except Exception:
                conn.execute("ROLLBACK TO notice")
                conn.execute("RELEASE notice")
                raise
            conn.execute("RELEASE notice")
            result.outcomes[outcome] += 1
            result.by_kind[(row.notice.kind.value, outcome)] += 1
            if prepared is not None:
                result.prepared.append(prepared)
        return result

    def _one(
        self, conn: sqlite3.Connection, row: NoticeRow, now: float
    ) -> tuple[str, Prepared | None]:
        request = self._ready(conn, row, now)
        if isinstance(request, str):
            return request, None
        try:
            prepared = self._messages.accept_within(conn, SYSTEM, request)
        except ApiError as e:
            if e.status >= 500:  # shutting down, the store: not this notice's fault
                raise
            return self._skip(conn, row, f"refused:{e.code}", now), None
        if not self._queued(conn, row, prepared, now):
            raise _Gone(row.id)
        return "queued", prepared

    def _ready(self, conn: sqlite3.Connection, row: NoticeRow, now: float) -> SendRequest | str:
        """Steps 1-4: the message to accept for `row`, or the outcome of its skip."""
        n = row.notice
        if n.expires_at is not None and now >= n.expires_at:
            return self._skip(conn, row, "expired", now)
        reason = notices.recheck(conn, row, now)
        if reason is not None:
            return self._skip(conn, row, reason, now)
        number = number_of(conn, self._db.cipher, n.contact_idx)
        if number is None:
            return self._skip(conn, row, "no_number", now)
        try:
            rendered = self._renderer.render(
                conn, n.template, n.language, n.variables, variant=n.variant
            )
        except TemplateMissing:
            return self._skip(conn, row, "template_missing", now)
        except Exception as e:  # one bad template must not hold every other notice back
            log.error("notice_render_failed", notice=row.id, error=exception_summary(e))
            return self._skip(conn, row, "render_failed", now)
        expires = None
        if n.expires_at is not None:
            expires = datetime.fromtimestamp(min(n.expires_at, now + self._horizon), UTC)
        return SendRequest(
            to=number,
            body=rendered.text,
            priority=n.priority,  # type: ignore[arg-type]  # a rule's class, checked at save
            category=n.kind.value,
            reference=row.id,
            purpose=n.purpose,  # type: ignore[arg-type]  # a client purpose, checked at save
            expires_at=expires,
        )

    @staticmethod
    def _queued(conn: sqlite3.Connection, row: NoticeRow, prepared: Prepared, now: float) -> bool:
        """Step 6: the notice is `queued` with its message; False if it left `pending`."""
        answer = prepared.answer()
        note = None if answer.status == "queued" else f"{answer.status}:{answer.reason}"
        return notices.finish(
            conn, row.id, NoticeState.QUEUED, now, reason=note, message_id=answer.id
        )

    @staticmethod
    def _skip(conn: sqlite3.Connection, row: NoticeRow, reason: str, now: float) -> str:
        if not notices.finish(conn, row.id, NoticeState.SKIPPED, now, reason=reason):
            return "gone"
        return f"skipped:{reason}"
