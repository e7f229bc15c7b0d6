"""Replies to appointment texts on a cluster node: matched against the shared
appointments, filed in the shared `appointment_replies` (every node's worklist).

The sink's keyword step runs on the node's SQLite writer, after the inbound's
PostgreSQL commit (`consent_inbound.py`). There `decide` only notes the text; the sink
then awaits `after`, which in one PostgreSQL transaction (under the clinical lock, the
one every clinical write takes, so a confirmation and a move of the same appointment
take turns; ordinary conversation, no intent and no reminded appointment, takes no
lock and files nothing; nor does a text the shared survey step took just before):
matches the reply, confirms (or cancels, with `[replies]
cancel_on_reply`) the appointment through the state machine (the planner re-plans its
shared notices), files the reply's row and outbox event, and inserts the answer SMS
into the shared queue under the inbound's `reply_id` (within the consent auto-reply
limit, counted on the shared queue). A reply already filed for the inbound (the same
inbound handed over again) is not filed twice. The audit entry is written after the
commit, to the node's own trail.

`STOP 1234` is noted before the consent keywords see it. After the commit, under the
contact's consent lock (the one every keyword decision about it takes), a live
appointment of this number with that code is looked up: found, the opt-out of that
appointment's texts (ledger scope `appointment:<id>`) is appended to the shared
ledger, unless in force already, with its reply row and its answer (always sent, as
an opt-out's confirmation); in the same transaction the appointment's pending
notices are cancelled and its messages still waiting blocked (`appointment_optout.py`,
its notices held before the contact's lock), so every node reads them cancelled at
once. Not found, the consent keywords decide the text as on one node (a look-alike of
STOP: staff review).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from gateway.clinical.commands import ClinicalHooks
from gateway.clinical.profile import InterfaceProfile
from gateway.cluster import appointment_optout, consent_store, seal_guard
from gateway.cluster.clinical_db import CLINICAL_LOCK, ClusterClinicalDb, run_bridged
from gateway.cluster.consent_inbound import ClusterInboundConsent
from gateway.cluster.consent_store import SharedWithdrawal
from gateway.cluster.queue_store import ClusterQueue
from gateway.config import Config
from gateway.consent import ledger, withdraw
from gateway.consent.answers import ANSWERED_IN_HOUR, Recipient, answered_params
from gateway.consent.inbound import Handled
from gateway.consent.purposes import appointment_scope
from gateway.logs import exception_summary
from gateway.replies import inbound, matching
from gateway.replies.inbound import InboundReplies, Outcome, Step
from gateway.replies.intents import Intent, parse, scoped_stop
from gateway.replies.texts import Answer, render
from gateway.router import Router
from gateway.scheduler import Scheduler
from gateway.scheduler_feed import Entry
from gateway.store.audit_log import AuditTrail
from gateway.store.crypto import DecryptError, FieldCipher
from gateway.store.inbound_parts import StoredInbound
from gateway.store.store import Store

log = structlog.get_logger("smsgw.replies")

PENDING = "pending"
NOT_OURS = object()  # a `STOP 1234` naming no live appointment of the number


class SharedReplies(InboundReplies):
    def __init__(
        self,
        config: Config,
        store: Store,
        router: Router,
        scheduler: Scheduler,
        hooks: ClinicalHooks,
        profiles: Mapping[str, InterfaceProfile],
        audit: AuditTrail,
        db: ClusterClinicalDb,
        queue: ClusterQueue,
        *,
        node_id: str,
        withdrawal: SharedWithdrawal,
        keywords: ClusterInboundConsent | None,
    ) -> None:
        """`withdrawal`, `node_id`: what an appointment's opt-out appends and blocks on
        the shared ledger; `keywords`: the consent keywords a `STOP 1234` matching no
        appointment goes to (None: consent is off)."""
        # The inbound feeds' profiles: a write-back they name is queued in the shared
        # `hl7_outbound` within the reply's transaction (cluster migration 23).
        super().__init__(config, store, router, scheduler, hooks, profiles, audit)
        self._db = db
        self._queue = queue
        self._trail = audit
        # Noted on the writer thread, acted on after the commit: by inbound id.
        self._pending: dict[str, StoredInbound] = {}
        # What a job asked for, for the steps after it in the same transaction.
        self._asked: dict[str, tuple[Answer, bool]] = {}
        self._audits: dict[str, tuple[str, dict[str, str | None]]] = {}
        self._stops: dict[str, tuple[StoredInbound, str]] = {}
        self._node_id = node_id
        self._withdrawal_shared = withdrawal
        self._keywords = keywords

    def before_keywords(self, conn: sqlite3.Connection, s: StoredInbound) -> Outcome | None:
        """`STOP 1234`: noted, decided after the commit (`_decide_stop`)."""
        if not self._settings.enabled:
            return None
        code = scoped_stop(s.body)
        if code is None or self._step(conn, s) is None:
            return None
        self._stops[s.id] = (s, code)
        return Outcome("", s.id, None, Intent.STOP.value, PENDING, PENDING, None, None, None)

    def decide(
        self, conn: sqlite3.Connection, s: StoredInbound, consent: Handled | None
    ) -> Outcome | None:
        if not self._settings.enabled or not inbound.left_to_us(consent):
            return None
        self._pending[s.id] = s
        return Outcome("", s.id, None, "", PENDING, PENDING, None, None, None)

    def after(self, o: Outcome) -> Awaitable[None] | None:
        stop = self._stops.pop(o.inbound_id, None)
        if stop is not None:
            return self._decide_stop(*stop)
        s = self._pending.pop(o.inbound_id, None)
        return None if s is None else self._decide_shared(s)

    async def _decide_shared(self, s: StoredInbound) -> None:
        await self._decided(s, lambda: self._in_transaction(s))

    async def _decide_stop(self, s: StoredInbound, code: str) -> None:
        if await self._decided(s, lambda: self._stop_in_transaction(s, code)) is NOT_OURS:
            await self._to_keywords(s)

    async def _to_keywords(self, s: StoredInbound) -> None:
        """The consent keywords' decision of a text this step did not take, as on one
        node when it was no reply of ours."""
        keywords = self._keywords
        handled = None if keywords is None else keywords.decide(None, s)
        if keywords is not None and handled is not None:
            done = keywords.after(handled)
            if done is not None:
                await done

    async def _decided(
        self, s: StoredInbound, attempt: Callable[[], Awaitable[Outcome | object | None]]
    ) -> Outcome | object | None:

        async def opened() -> Outcome | object | None:
            try:
                return await attempt()
            except DecryptError:  # rolled back; sealed by a rotation this node has not seen?
                if not await self._db.took_up_keys():
                    raise
                return await attempt()

        try:  # sealed under a key a retirement removed: once more under the current one
            done = await seal_guard.retried(self._db.keys, opened)
        except Exception as e:  # the inbound text is stored: only the reply is lost
            log.error("reply_failed", inbound_id=s.id, error=exception_summary(e))
            return None
        finally:
            self._asked.pop(s.id, None)
            audited = self._audits.pop(s.id, None)
        if not isinstance(done, Outcome):
            return done
        if audited is not None:
            row_id, ids = audited
            await self._trail.record(
                "patient", "appointment_reply", "appointment_reply", row_id, **ids
            )
        inbound.log_outcome(done)
        if done.answer is not None:
            self._scheduler.add(done.answer)
        return done

    async def _stop_in_transaction(self, s: StoredInbound, code: str) -> Outcome | object | None:
        async with self._db.pool.connection() as conn:
            async with conn.transaction():
                if await _filed(conn, s.id):
                    return None
                step: list[Step] = []
                found = await run_bridged(conn, lambda c: self._stop_match(c, s, code, step))
                if found is None:
                    return NOT_OURS
                # Before the contact's lock (`appointment_optout.py`'s lock order).
                await appointment_optout.hold_notices(conn, [(found.id, step[0].idx)])
                await consent_store.lock_contacts(conn, [step[0].idx])
                forced = await self._opt_out(conn, step[0], found.id)
                done = await run_bridged(
                    conn,
                    lambda c: self._record(
                        dataclasses.replace(step[0], conn=c),
                        Intent.STOP,
                        found.id,
                        True,
                        "opted_out",
                        "done",
                        forced=forced,
                    ),
                )
                asked = self._asked.get(s.id)
                if asked is not None:
                    answer, withheld = await self._shared_answer(conn, step[0], *asked)
                    done = dataclasses.replace(done, answer=answer, withheld=withheld)
            self._db.committed()
        return done

    def _stop_match(
        self, conn: sqlite3.Connection, s: StoredInbound, code: str, out: list[Step]
    ) -> matching.Matched | None:
        step = self._step(conn, s)
        if step is None:
            return None
        out.append(step)
        return matching.by_code(conn, step.idx, code, s.received_at)

    async def _opt_out(self, conn: Any, step: Step, appointment_id: str) -> bool:
        """The opt-out of the appointment's texts on the shared ledger; False if it was
        in force already (as SQLite's `_stop`)."""
        scope = appointment_scope(appointment_id)
        if await run_bridged(conn, lambda c: withdraw.appointment_out(c, step.idx, scope)):
            return False
        entry = ledger.Entry(
            contact_idx=step.idx,
            number=step.number,
            decision="opt_out",
            scope=scope,
            program=step.program,
            source="keyword",
            at=step.inbound.received_at,
            inbound_id=step.inbound.id,
        )
        await consent_store.append(conn, self._db.cipher, entry, self._node_id)
        await self._withdrawal_shared.after(conn, entry)
        return True

    async def _in_transaction(self, s: StoredInbound) -> Outcome | None:
        async with self._db.pool.connection() as conn:
            async with conn.transaction():
                if await _filed(conn, s.id):
                    return None
                step: list[Step] = []
                done = await run_bridged(conn, lambda c: self._job(c, s, step))
                asked = self._asked.get(s.id)
                if done is not None and step and asked is not None:
                    answer, withheld = await self._shared_answer(conn, step[0], *asked)
                    done = dataclasses.replace(done, answer=answer, withheld=withheld)
            self._db.committed()
        return done

    def _job(self, conn: sqlite3.Connection, s: StoredInbound, out: list[Step]) -> Outcome | None:
        step = self._step(conn, s)
        if step is None:
            return None
        out.append(step)
        now = s.received_at
        if _survey_took(conn, s, step.idx):
            return None  # a survey's answer: not a reply (as SQLite's sink step skips it)
        if parse(s.body) is None and matching.latest_reminded(conn, step.idx, now) is None:
            return None  # ordinary conversation: nothing to file, and no lock taken for it
        conn.execute("SELECT pg_advisory_xact_lock(?)", (CLINICAL_LOCK,))
        return self._reply(step)

    def _sealer(self) -> FieldCipher | None:
        return self._db.cipher

    def _audit_reply(self, step: Step, row_id: str, ids: dict[str, str | None]) -> None:
        self._audits[step.inbound.id] = (row_id, ids)

    def _answer(self, step: Step, kind: Answer, forced: bool) -> tuple[Entry | None, str | None]:
        self._asked[step.inbound.id] = (kind, forced)
        return None, None  # made in the same transaction by `_shared_answer`

    async def _shared_answer(
        self, conn: Any, step: Step, kind: Answer, forced: bool
    ) -> tuple[Entry | None, str | None]:
        """The answer SMS in the shared queue, as the cluster's keyword answers are."""
        s = step.inbound
        to = Recipient(step.number, step.idx, step.program)
        if not forced:
            cur = await conn.execute(
                ANSWERED_IN_HOUR.replace("?", "%s"), answered_params(to, s.received_at)
            )
            (sent,) = await cur.fetchone()
            if self._answers.limit_reached(int(sent)):
                return None, "limit"
        cur = await conn.execute("SELECT language FROM contacts WHERE idx = %s", (to.idx,))
        found = await cur.fetchone()
        language = (None if found is None else found[0]) or self._book.default_language
        body = render(kind, language, self._book.title(step.program))
        made = self._answers.answer(s, to, body, f"reply:{kind.value}:{step.program}")
        if made is None:
            return None, "no_route"
        message, entry = made
        await self._queue.insert_within(conn, [message], None)
        return entry, None


async def _filed(conn: Any, inbound_id: str) -> bool:
    """Whether a reply was filed for the inbound before (the same inbound handed over
    again)."""
    cur = await conn.execute(
        "SELECT 1 FROM appointment_replies WHERE inbound_id = %s", (inbound_id,)
    )
    return await cur.fetchone() is not None


# The shared survey step ran before this one (the sink awaits its steps in order) and
# answered, re-asked, completed or failed the number's session at the text's time.
_SURVEY_TOOK = (
    "SELECT 1 FROM survey_answers WHERE inbound_id = ?"
    " UNION ALL SELECT 1 FROM survey_sessions WHERE contact_idx = ? AND updated_at = ?"
    " AND state <> 'timed_out' LIMIT 1"
)


def _survey_took(conn: sqlite3.Connection, s: StoredInbound, idx: bytes) -> bool:
    return conn.execute(_SURVEY_TOOK, (s.id, idx, s.received_at)).fetchone() is not None
