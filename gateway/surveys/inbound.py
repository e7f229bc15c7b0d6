"""Survey answers, decided in the inbound message's transaction.

Theory of operation. The sink runs, for each whole inbound text, in the transaction
that stores it: a `STOP 1234` of an appointment, then the consent keywords, then this
(`decide`), then the appointment replies, which see the text only if a survey did not
take it. For a sender with an open session:

1. The consent keywords acted on the text: an opt-out (STOP, STOP ALL, a revocation
   phrase) closes the session as `stopped` and sends nothing more; anything else they
   acted on (HELP, START, a look-alike for staff review) is not an answer, and the
   session waits on. STOP therefore always wins over any answer matching.
2. An appointment reply naming its code (`C 1234`) is left to the appointment replies.
3. The question's time-out has passed (the runner has not closed it yet): closed as
   `timed_out`; the text is not an answer. Nor is a text sent before the question
   left (held until the morning by quiet hours): it answers nothing asked yet.
4. Otherwise the text is the answer: judged (`answers.judge`), recorded, and the next
   text sent (`flow.next_step`) through the accept path (`asking.ask`) in this same
   transaction; a text the gateway cannot send now (no route, shutting down) closes
   the session `failed`, and the answer is kept.

Everything runs under a savepoint: should it fail, it is rolled back and logged, and
the inbound text still commits.

On a cluster (`SharedInboundSurveys`) the sessions are in the shared PostgreSQL and
the inbound's keyword step runs on the node's SQLite writer: there the step only
notes the text, and after the inbound's commit (after the keyword's own shared
decision, so a STOP is recorded first) the same decision runs as one job on the
shared tables (`ClinicalDb`, under the clinical lock): an answer received on any node
advances the session whichever node started it, once, and the next text goes into
the shared queue in that job's transaction. The appointment replies there run after
it (`gateway/cluster/replies.py`) and pass over a text it took.

Survey texts are PHI: nothing here logs a number or a text, only ids, the question's
index and a verdict's reason.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from gateway.clinical.db import ClinicalDb
from gateway.consent.inbound import Handled
from gateway.consent.keywords import Action
from gateway.errors import ApiError
from gateway.intake import Prepared, normalise_number
from gateway.logs import exception_summary
from gateway.replies.intents import parse
from gateway.store.inbound_parts import StoredInbound
from gateway.store.store import Store
from gateway.surveys import flow, sql
from gateway.surveys.answers import judge
from gateway.surveys.asking import SYSTEM, ask
from gateway.surveys.flow import Position
from gateway.surveys.spec import SurveySpec
from gateway.usecases.messages import Messages

log = structlog.get_logger("smsgw.surveys")

_E164 = re.compile(r"\+[1-9][0-9]{6,14}", re.ASCII)
_OPT_OUTS = (Action.OPT_OUT, Action.OPT_OUT_ALL, Action.REVOCATION)
_OPEN_FOR = "SELECT 1 FROM survey_sessions WHERE contact_idx = ? AND state = 'open'"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a survey did with an inbound text, for `after` (after the commit).
    `took`: the text was the survey's; the appointment replies do not see it."""

    session_id: str
    inbound_id: str
    event: str  # answered, reasked, completed, stopped, timed_out, failed
    took: bool
    question: int
    reason: str | None = None  # an invalid answer's reason
    prepared: tuple[Prepared, ...] = ()


class InboundSurveys:
    def __init__(
        self,
        store: Store,
        region: str,
        messages: Callable[[], Messages],
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._region = region
        self._messages = messages
        self._wake = wake
        self._specs: dict[tuple[str, int], SurveySpec] = {}  # versions never change

    # -- on the writer thread, in the inbound's transaction ----------------------------

    def decide(
        self, conn: sqlite3.Connection, s: StoredInbound, consent: Handled | None
    ) -> Outcome | None:
        number = self.number_of(s)
        if number is None:
            return None
        idx = self._store.blind_index(number)
        session = sql.open_for(conn, idx)
        if session is None:
            return None
        conn.execute("SAVEPOINT surveys")
        try:
            outcome = self._decide(conn, s, consent, session, number)
        except Exception as e:
            conn.execute("ROLLBACK TO surveys")
            conn.execute("RELEASE surveys")
            log.error("survey_answer_failed", inbound_id=s.id, error=exception_summary(e))
            return None
        conn.execute("RELEASE surveys")
        return outcome

    def number_of(self, s: StoredInbound) -> str | None:
        """The sender as a number, or None (an alphanumeric sender answers nothing)."""
        if _E164.fullmatch(s.sender):
            return s.sender
        return normalise_number(s.sender, self._region)

    def index_of(self, s: StoredInbound) -> bytes | None:
        number = self.number_of(s)
        return None if number is None else self._store.blind_index(number)

    def _decide(
        self,
        conn: sqlite3.Connection,
        s: StoredInbound,
        consent: Handled | None,
        session: sql.Session,
        number: str,
    ) -> Outcome | None:
        now = s.received_at
        if consent is not None and consent.action in _OPT_OUTS:
            sql.close(conn, session.id, "stopped", now)
            return Outcome(session.id, s.id, "stopped", True, session.question)
        if consent is not None and not (
            consent.action is Action.OPT_IN_IF_ASKED and consent.decisions == 0
        ):
            return None  # HELP, START, a look-alike: consent's, and no answer
        parsed = parse(s.body)
        if parsed is not None and parsed.code is not None:
            return None  # `C 1234`: an appointment reply by its code
        if session.deadline is not None and session.deadline <= now:
            sql.close(conn, session.id, "timed_out", now)
            return Outcome(session.id, s.id, "timed_out", False, session.question)
        if sql.question_waiting(conn, session.id):
            return None  # it has not been asked yet (held for quiet hours)
        spec = self._spec(conn, session)
        question = spec.questions[session.question]
        verdict = judge(question, s.body)
        step = flow.next_step(
            spec, Position(session.question, session.asks), verdict, session.language
        )
        if step.record is not None:
            sql.add_answer(
                conn, session, step.record.valid, step.record.value, step.record.reason, s.id, now
            )
        prepared: tuple[Prepared, ...] = ()
        goes_at = now
        message_id = None
        if step.send is not None:
            try:
                asked = ask(
                    conn,
                    self._messages(),
                    SYSTEM,
                    number=number,
                    body=step.send,
                    purpose=spec.purpose,
                    priority=spec.priority,
                    session_id=session.id,
                    now=now,
                )
            except ApiError as e:
                sql.close(conn, session.id, "failed", now)
                log.warning("survey_send_refused", session_id=session.id, code=e.code)
                return Outcome(session.id, s.id, "failed", True, session.question)
            prepared, goes_at, message_id = (
                (asked.prepared,),
                asked.goes_at,
                asked.prepared.message.id,
            )
        if step.position is None:
            sql.close(conn, session.id, "completed", now)
            event = "completed"
        else:
            deadline = goes_at + spec.timeout(step.position.question)
            sql.advance(
                conn, session.id, step.position.question, step.position.asks, deadline,
                message_id, now,
            )  # fmt: skip
            event = "reasked" if step.record is None else "answered"
        reason = None if step.record is not None and step.record.valid else verdict.reason
        return Outcome(session.id, s.id, event, True, session.question, reason, prepared)

    def _spec(self, conn: sqlite3.Connection, session: sql.Session) -> SurveySpec:
        key = (session.survey_id, session.version)
        found = self._specs.get(key)
        if found is None:
            survey = sql.version_of(conn, *key)
            assert survey is not None, "a session names a version that exists"
            found = self._specs[key] = survey.spec
        return found

    # -- on the event loop, after the commit -------------------------------------------

    def after(self, o: Outcome) -> None:
        if o.prepared:
            self._messages().hand_over(o.prepared)
        self._wake()
        log.info(
            "survey_reply",
            session_id=o.session_id,
            inbound_id=o.inbound_id,
            survey_event=o.event,
            question=o.question,
            reason=o.reason,
            message_id=o.prepared[0].message.id if o.prepared else None,
        )


class SurveyStep(Protocol):
    """The sink's survey step: `decide` in the inbound's transaction (its result's
    `took`: the text was the survey's), `after` once that committed (maybe awaitable)."""

    def decide(self, conn: sqlite3.Connection, s: StoredInbound, consent: Handled | None) -> Any:
        """What to do after the commit, or None."""
        ...

    def after(self, o: Any) -> object: ...


@dataclass(frozen=True, slots=True)
class Noted:
    """An inbound text a cluster node decides on the shared sessions after its commit."""

    inbound: StoredInbound
    consent: Handled | None
    idx: bytes
    took: bool = False  # not known before the shared decision: the replies still see it


class SharedInboundSurveys:
    """`SurveyStep` on a cluster node: the decision on the shared sessions."""

    def __init__(self, local: InboundSurveys, db: ClinicalDb) -> None:
        self._local = local
        self._db = db

    def decide(
        self, conn: sqlite3.Connection, s: StoredInbound, consent: Handled | None
    ) -> Noted | None:
        idx = self._local.index_of(s)
        return None if idx is None else Noted(s, consent, idx)

    async def after(self, noted: Noted) -> None:
        # Most texts answer no survey: a plain read spares them the clinical lock.
        if await self._db.one(_OPEN_FOR, (noted.idx,)) is None:
            return
        try:
            outcome = await self._db.run(
                lambda conn: self._local.decide(conn, noted.inbound, noted.consent)
            )
        except Exception as e:  # the text is stored; a survey's failure must not undo it
            log.error(
                "survey_answer_failed", inbound_id=noted.inbound.id, error=exception_summary(e)
            )
            return
        if outcome is not None:
            self._local.after(outcome)
