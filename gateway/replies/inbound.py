"""Replies to appointment texts, decided in the inbound message's transaction.

Theory of operation. The sink runs, for each whole inbound text, in the transaction
that stores it:

1. `before_keywords`: `STOP 1234` / `ALTO 1234` whose code names a live appointment
   of this number is an opt-out of that appointment's texts (ledger scope
   `appointment:<id>`); the consent keywords then do not see it. With a code this
   number has no appointment for, the consent keywords decide as for any text (a
   look-alike of STOP: staff review). A bare STOP is never ours (MSG-7).
2. The consent keywords (`gateway.consent.inbound.decide`).
3. `decide`: unless consent acted (a STOP, START, HELP, a YES taken as an opt-in, a
   revocation or review), the text is parsed (`intents.parse`) and matched
   (`matching.find`): confirm -> confirmed (version bump, planner re-plans); reschedule
   -> a request, never a cancel; cancel -> a request, or cancelled where
   `[replies] cancel_on_reply`. Each is written back per the appointment's profile
   (`writeback.queue`) or, for requests without a write-back, put on the worklist. A
   reply that matches no appointment goes to the worklist as `unmatched`; a text that
   is no intent from a number with a live reminded appointment as `unclear`. Every
   reply gets its row and an `appointment.reply` event; an acted one an answer SMS
   (purpose `compliance`, the id `reply_id(inbound)`, within the consent auto-reply
   limit; an opt-out's answer always, MSG-6).

All of it runs under a savepoint: should it fail, it is rolled back and logged, and the
inbound text is still stored (and the consent decision kept). Nothing here logs a
number or a text.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from gateway.appointments import machine
from gateway.clinical.commands import ApplyContext, ClinicalHooks
from gateway.clinical.profile import InterfaceProfile
from gateway.config import Config
from gateway.consent import ledger, withdraw
from gateway.consent.answers import Answers, Recipient
from gateway.consent.inbound import Handled
from gateway.consent.inbound_config import replies_for
from gateway.consent.keywords import Action
from gateway.consent.purposes import appointment_scope
from gateway.consent.withdraw import Withdrawal
from gateway.intake import normalise_number
from gateway.logs import exception_summary
from gateway.replies import matching, writeback
from gateway.replies import worklist_sql as sql
from gateway.replies.intents import Intent, Parsed, parse, scoped_stop
from gateway.replies.texts import Answer, render
from gateway.router import Router
from gateway.scheduler import Scheduler
from gateway.scheduler_feed import Entry
from gateway.store.audit_log import AuditTrail
from gateway.store.crypto import FieldCipher
from gateway.store.inbound_parts import StoredInbound
from gateway.store.store import Store

log = structlog.get_logger("smsgw.replies")

_E164 = re.compile(r"\+[1-9][0-9]{6,14}", re.ASCII)
_ANSWERS = {
    "confirmed": Answer.CONFIRMED,
    "reschedule_requested": Answer.RESCHEDULE,
    "cancel_requested": Answer.CANCEL,
    "cancelled": Answer.CANCELLED,
    "opted_out": Answer.STOPPED,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a reply did, for `after` (on the event loop, after the commit)."""

    reply_id: str
    inbound_id: str
    appointment_id: str | None
    intent: str
    outcome: str
    state: str
    writeback_id: str | None
    answer: Entry | None
    withheld: str | None


@dataclass(frozen=True, slots=True)
class Step:
    """One inbound text being decided, in its transaction."""

    conn: sqlite3.Connection
    inbound: StoredInbound
    number: str
    idx: bytes
    program: str


class InboundReplies:
    def __init__(
        self,
        config: Config,
        store: Store,
        router: Router,
        scheduler: Scheduler,
        hooks: ClinicalHooks,
        profiles: Mapping[str, InterfaceProfile],
        audit: AuditTrail | None = None,
    ) -> None:
        self._settings = config.replies
        self._consent = config.consent
        self._region = config.queue.default_region
        self._book = replies_for(config.consent)
        self._store = store
        self._router = router
        self._scheduler = scheduler
        self._hooks = hooks
        self._profiles = profiles
        self._audit = audit
        self._answers = Answers(config, store, router)
        self._withdrawal = Withdrawal(config.consent)

    # -- on the writer thread, in the inbound's transaction ----------------------------

    def before_keywords(self, conn: sqlite3.Connection, s: StoredInbound) -> Outcome | None:
        """`STOP 1234` naming a live appointment of this number; else None."""
        if not self._settings.enabled:
            return None
        code = scoped_stop(s.body)
        step = None if code is None else self._step(conn, s)
        if step is None or code is None:
            return None
        found = matching.by_code(conn, step.idx, code, s.received_at)
        if found is None:
            return None
        return self._guarded(step, lambda: self._act(step, Parsed(Intent.STOP, code), found))

    def decide(
        self, conn: sqlite3.Connection, s: StoredInbound, consent: Handled | None
    ) -> Outcome | None:
        """After the consent keywords: the reply's intent and its effects, or None."""
        if not self._settings.enabled or not left_to_us(consent):
            return None
        step = self._step(conn, s)
        if step is None:
            return None
        return self._guarded(step, lambda: self._reply(step))

    def _reply(self, step: Step) -> Outcome | None:
        now = step.inbound.received_at
        parsed = parse(step.inbound.body)
        if parsed is None:
            live = matching.latest_reminded(step.conn, step.idx, now)
            if live is None:
                return None  # ordinary conversation, as before replies existed
            return self._record(step, Intent.UNCLEAR, live.id, False, "unclear", "open")
        found = None
        if parsed.intent is not Intent.STOP:  # a STOP with a known code was taken before
            found = matching.find(step.conn, step.idx, parsed.code, now)
        if found is None:
            by_code = parsed.code is not None
            return self._record(step, parsed.intent, None, by_code, "unmatched", "open")
        return self._act(step, parsed, found)

    def _act(self, step: Step, parsed: Parsed, found: matching.Matched) -> Outcome:
        conn, s = step.conn, step.inbound
        now = s.received_at
        profile = self._profiles.get(found.source) or InterfaceProfile(found.source)
        ctx = ApplyContext(
            now,
            found.source,
            f"sms:{s.id}",
            profile,
            self._store,
            self._hooks,
            message_ref=s.id,
            sealer=self._sealer(),
        )
        intent = parsed.intent
        cancelled = False
        forced = False
        if intent is Intent.CONFIRM:
            machine.confirm(conn, ctx, found.id, "sms")
            outcome = "confirmed"
        elif intent is Intent.RESCHEDULE:
            outcome = "reschedule_requested"
        elif intent is Intent.CANCEL:
            if self._settings.cancel_on_reply:
                cancelled = machine.cancel_by_patient(conn, ctx, found.id)
            outcome = "cancelled" if cancelled else "cancel_requested"
        else:
            forced = self._stop(step, found.id)
            outcome = "opted_out"
        reply = sql.new_id()
        wb = writeback.WriteBack(reply, found.id, intent, cancelled, now)
        written = writeback.queue(conn, ctx.cipher, wb, profile)
        needs_staff = written is None and intent in (Intent.RESCHEDULE, Intent.CANCEL)
        return self._record(
            step,
            intent,
            found.id,
            parsed.code is not None,
            outcome,
            "open" if needs_staff else "done",
            reply_row=reply,
            written=written,
            forced=forced,
        )

    def _stop(self, step: Step, appointment_id: str) -> bool:
        """Opt the number out of this appointment's texts: the ledger row, its pending
        notices cancelled, its waiting messages blocked. False if it already was."""
        conn, s = step.conn, step.inbound
        scope = appointment_scope(appointment_id)
        if withdraw.appointment_out(conn, step.idx, scope):
            return False
        entry = ledger.Entry(
            contact_idx=step.idx,
            number=step.number,
            decision="opt_out",
            scope=scope,
            program=step.program,
            source="keyword",
            at=s.received_at,
            inbound_id=s.id,
        )
        withdraw.record(conn, self._cipher(), self._withdrawal, self._audit, entry)
        return True

    def _record(
        self,
        step: Step,
        intent: Intent,
        appointment_id: str | None,
        by_code: bool,
        outcome: str,
        state: sql.ReplyState,
        *,
        reply_row: str | None = None,
        written: str | None = None,
        forced: bool = False,
    ) -> Outcome:
        s = step.inbound
        row_id = reply_row or sql.new_id()
        new = sql.NewReply(
            s.id, step.idx, appointment_id, intent.value, by_code, outcome, state, s.received_at
        )
        sql.insert(step.conn, row_id, new, written)
        self._audit_reply(
            step,
            row_id,
            {
                "inbound_id": s.id,
                "appointment_id": appointment_id,
                "intent": intent.value,
                "outcome": outcome,
                "writeback_id": written,
            },
        )
        answer: Entry | None = None
        withheld: str | None = None
        kind = _ANSWERS.get(outcome)
        if kind is not None and self._settings.answer:
            answer, withheld = self._answer(step, kind, forced)
        return Outcome(
            row_id, s.id, appointment_id, intent.value, outcome, state, written, answer, withheld
        )

    def _sealer(self) -> FieldCipher | None:
        """The cipher of the clinical rows where it is not the store's (a cluster's)."""
        return None

    def _audit_reply(self, step: Step, row_id: str, ids: dict[str, str | None]) -> None:
        """The reply's audit entry, in its transaction."""
        if self._audit is not None:
            self._audit.append_in(
                step.conn,
                step.inbound.received_at,
                "patient",
                "appointment_reply",
                "appointment_reply",
                row_id,
                **ids,
            )

    def _answer(self, step: Step, kind: Answer, forced: bool) -> tuple[Entry | None, str | None]:
        """The answer SMS, in this transaction, as the consent replies are written."""
        conn, s = step.conn, step.inbound
        to = Recipient(step.number, step.idx, step.program)
        if not forced and self._answers.over_limit(conn, to, s.received_at):
            return None, "limit"
        language = self._answers.language_of(conn, to) or self._book.default_language
        body = render(kind, language, self._book.title(step.program))
        entry = self._answers.queue(conn, s, to, body, f"reply:{kind.value}:{step.program}")
        return (entry, None) if entry is not None else (None, "no_route")

    def _step(self, conn: sqlite3.Connection, s: StoredInbound) -> Step | None:
        number = s.sender if _E164.fullmatch(s.sender) else normalise_number(s.sender, self._region)
        if number is None:  # an alphanumeric sender: no patient
            return None
        idx = self._store.blind_index(number)
        return Step(conn, s, number, idx, self._consent.program_for_sender(s.recipient))

    def _cipher(self) -> FieldCipher:
        cipher = self._store.cipher
        assert cipher is not None, "store is not open"
        return cipher

    def _guarded(self, step: Step, act: Callable[[], Outcome | None]) -> Outcome | None:
        """`act` under a savepoint: on failure, its writes are undone and logged, and the
        inbound text (and the consent decision) still commit."""
        step.conn.execute("SAVEPOINT replies")
        try:
            outcome = act()
        except Exception as e:
            step.conn.execute("ROLLBACK TO replies")
            step.conn.execute("RELEASE replies")
            log.error("reply_failed", inbound_id=step.inbound.id, error=exception_summary(e))
            return None
        step.conn.execute("RELEASE replies")
        return outcome

    # -- on the event loop, after the commit -------------------------------------------

    def after(self, o: Outcome) -> Awaitable[None] | None:
        if o.answer is not None:
            self._scheduler.add(o.answer)
        log_outcome(o)
        return None


def log_outcome(o: Outcome) -> None:
    log.info(
        "appointment_reply",
        reply_id=o.reply_id,
        inbound_id=o.inbound_id,
        appointment_id=o.appointment_id,
        intent=o.intent,
        outcome=o.outcome,
        state=o.state,
        writeback_id=o.writeback_id,
        answer_id=None if o.answer is None else o.answer.id,
        withheld=o.withheld,
    )


def left_to_us(consent: Handled | None) -> bool:
    """Consent did nothing with the text: it was no keyword, or a YES that was no
    opt-in (not the answer to an opt-out confirmation)."""
    if consent is None:
        return True
    return consent.action is Action.OPT_IN_IF_ASKED and consent.decisions == 0
