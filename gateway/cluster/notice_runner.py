"""The notice runner on a cluster: every node runs passes over the shared notices.

Theory of operation. A pass is one PostgreSQL transaction on the shared queue's pool:

1. claim: the pending notices due by now, `FOR UPDATE SKIP LOCKED` (another node's
   pass holds its own: this one passes over them, so a notice goes out from one node);
2. for each, the steps the one-node runner takes before its accept (`_ready`: expired,
   the kind's recheck, the number, the render), a skip being its `finish`; and first
   an opt-out of that one appointment
   (`appointment:<id>`, newer than the patient's last opt-in of everything): as on
   SQLite, such notices are cancelled when the opt-out is recorded
   (`appointment_optout.py`, in its transaction) and when one is planned (cluster
   migration 24's trigger); a notice still pending under one in force (planned while
   the opt-out was committing, or an entry appended without its withdrawal) is
   skipped `opted_out` when due;
3. their messages accepted in the same transaction
   (`Messages.accept_many_within_shared`: judged by the consent policy as `accept`
   judges, inserted into the shared queue; an opted-out patient's message is stored
   `blocked` and the notice records `blocked:opted_out`);
4. each notice `finish`ed `queued` with its message id; then the commit, and only
   after it the messages go to the scheduler (`hand_over`).

A node that dies mid-pass (or whose PostgreSQL connection drops) rolls the whole pass
back: its notices are pending again, unlocked, for the next pass of any node. Steps 1,
2 and 4 are the clinical jobs themselves, run against the transaction's connection
from a worker thread (`gateway/cluster/clinical_db.py`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence

from drivers.clock import Clock
from gateway.clinical import notices
from gateway.clinical.notices import NoticeRow
from gateway.clinical.rendering import Renderer
from gateway.clinical.runner import BATCH, SYSTEM, NoticeRunner, PassResult
from gateway.cluster import seal_guard
from gateway.cluster.clinical_db import ClusterClinicalDb, run_bridged
from gateway.consent.purposes import SCOPE_ALL, appointment_scope
from gateway.errors import ApiError
from gateway.intake import Prepared, SendRequest
from gateway.metrics import Metrics
from gateway.store.crypto import DecryptError
from gateway.store.store import Store
from gateway.usecases.messages import Messages

Ready = list[tuple[NoticeRow, SendRequest]]


class SharedNoticeRunner(NoticeRunner):
    """`NoticeRunner` whose passes run on the shared notices (one per node)."""

    def __init__(
        self,
        db: ClusterClinicalDb,
        store: Store,
        messages: Messages,
        renderer: Renderer,
        clock: Clock,
        *,
        horizon: float,
        bell: threading.Event | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__(
            store,
            messages,
            renderer,
            clock,
            horizon=horizon,
            bell=bell,
            metrics=metrics,
            db=db,
        )
        self._shared = db

    async def run_once(self) -> PassResult:
        """One pass over the shared notices due now; returns once it committed (again,
        once, if it met a key generation another node's rotation added, or sealed under
        one a retirement removed)."""
        return await seal_guard.retried(self._shared.keys, self._pass_opening)

    async def _pass_opening(self) -> PassResult:
        try:
            return await self._pass_shared()
        except DecryptError:
            if not await self._shared.took_up_keys():
                raise
            return await self._pass_shared()

    async def _pass_shared(self) -> PassResult:
        now = self._clock.time()
        result = PassResult()
        async with self._shared.pool.connection() as conn, conn.transaction():
            ready: Ready = await run_bridged(conn, lambda c: self._claim(c, now, result))
            accepted: list[Prepared | ApiError] = []
            if ready:
                requests = [(request, row.notice.contact_idx) for row, request in ready]
                accepted = await self._messages.accept_many_within_shared(conn, SYSTEM, requests)
                await run_bridged(conn, lambda c: self._finish(c, ready, accepted, now, result))
        self._shared.committed()
        self._passed(result)
        return result

    def _ready(self, conn: sqlite3.Connection, row: NoticeRow, now: float) -> SendRequest | str:
        n = row.notice
        if n.appointment_id is not None and _appointment_opted_out(conn, row):
            return self._skip(conn, row, "opted_out", now)
        return super()._ready(conn, row, now)

    def _claim(self, conn: sqlite3.Connection, now: float, result: PassResult) -> Ready:
        ready: Ready = []
        for row in notices.due(conn, self._db.cipher, now, BATCH, claim=True):
            request = self._ready(conn, row, now)
            if isinstance(request, str):
                _count(result, row, request)
            else:
                ready.append((row, request))
        return ready

    def _finish(
        self,
        conn: sqlite3.Connection,
        ready: Ready,
        accepted: Sequence[Prepared | ApiError],
        now: float,
        result: PassResult,
    ) -> None:
        for (row, _), done in zip(ready, accepted, strict=True):
            if isinstance(done, ApiError):  # this request refused (a 4xx: a 5xx was raised)
                _count(result, row, self._skip(conn, row, f"refused:{done.code}", now))
                continue
            if not self._queued(conn, row, done, now):  # the claim's lock holds it
                raise RuntimeError(f"notice {row.id} left pending under this pass's lock")
            result.prepared.append(done)
            _count(result, row, "queued")


_APPOINTMENT_OPT_OUT = (
    "SELECT 1 FROM consent_state s WHERE s.contact_idx = ? AND s.scope = ? AND s.opted = 'out'"
    " AND s.seq > (SELECT coalesce(max(a.seq), 0) FROM consent_state a"
    " WHERE a.contact_idx = ? AND a.scope = ? AND a.opted = 'in') LIMIT 1"
)


def _appointment_opted_out(conn: sqlite3.Connection, row: NoticeRow) -> bool:
    n = row.notice
    assert n.appointment_id is not None
    scope = appointment_scope(n.appointment_id)
    args = (n.contact_idx, scope, n.contact_idx, SCOPE_ALL)
    return conn.execute(_APPOINTMENT_OPT_OUT, args).fetchone() is not None


def _count(result: PassResult, row: NoticeRow, outcome: str) -> None:
    result.outcomes[outcome] += 1
    result.by_kind[(row.notice.kind.value, outcome)] += 1
