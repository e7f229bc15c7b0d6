"""Keywords in, consent decisions and replies out, in the inbound message's transaction.

Theory of operation. `decide` runs on the writer thread inside the job that inserts
the inbound row (single texts and completed concatenated sets alike), so an opt-out
commits with the STOP that carried it, and a claim starting after that commit sees it
(MSG-5, R-OPT-1). It classifies the text (`keywords.Matcher`), finds the program (the
number the patient texted) and then:

- STOP / STOP ALL / a revocation phrase: one `opt_out` ledger row per scope that was
  not already out (MSG-7: the purpose of the last message that left for the number in
  this program, plus kind:marketing; unknown purpose, STOP ALL or `revoke_all`: "all"),
  each linked to the inbound and to the message it answered. A phrase also opens a
  `consent_review` row for staff (MSG-4). A STOP that changed something is confirmed,
  always, once (MSG-6); one that changed nothing gets a confirmation only if no
  opt-out confirmation went to the number within the hour and the auto-reply limit
  allows.
- START / UNSTOP, and YES-like words right after our opt-out confirmation: an
  `opt_in` of "all" in this program, only if the number is opted out there now;
  otherwise nothing (no row, no reply). Confirmed within the auto-reply limit (MSG-9).
- HELP / INFO: answered (the opted-out text if opted out; `answer_help_opted_out`
  false keeps silent then), within the auto-reply limit (MSG-8, R-OPT-3).
- Ambiguous texts ("stopping by later", "Don't stop"): a review row only.

A reply is a message row of purpose `compliance`, priority high, written with the
store's own insert statements in the same transaction. Its id is the inbound's id with
one bit set that no generated id has (`reply_id`): one inbound can never have two
replies, and after a crash between the commit and `after` (which hands the reply to
the scheduler) the scheduler's load finds the committed row. The auto-reply limit counts
compliance messages to the number in the last hour (R-OPT-1: no loops with
auto-responders). Nothing here logs a number or a text.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Awaitable
from dataclasses import dataclass

import structlog

from gateway.config import Config
from gateway.consent import ledger, withdraw
from gateway.consent.answers import HOUR, Answers, Recipient
from gateway.consent.inbound_config import matcher_for, replies_for
from gateway.consent.keywords import Action, Match
from gateway.consent.purposes import (
    APPOINTMENT_SCOPE_PREFIX,
    KIND_OF,
    SCOPE_ALL,
    Kind,
    Purpose,
    covering_scopes,
    kind_scope,
    purpose_scope,
)
from gateway.consent.replies import Reply
from gateway.consent.withdraw import Withdrawal
from gateway.intake import normalise_number
from gateway.models import new_message_id
from gateway.router import Router
from gateway.scheduler import Scheduler
from gateway.scheduler_feed import Entry
from gateway.store.audit_log import AuditTrail
from gateway.store.inbound_parts import StoredInbound
from gateway.store.store import Store

log = structlog.get_logger("smsgw.consent")

ASKED_WINDOW = 86400.0  # a YES counts as an opt-in this long after our opt-out confirmation
_OPT_OUT = (Action.OPT_OUT, Action.OPT_OUT_ALL, Action.REVOCATION)
_OPT_IN = (Action.OPT_IN, Action.OPT_IN_IF_ASKED)
_LEFT = ("sending", "sent", "delivered")  # a message in these states has left for the number


@dataclass(frozen=True, slots=True)
class Handled:
    """What `decide` did, for `after` (on the event loop, after the commit)."""

    inbound_id: str
    action: Action
    program: str
    decisions: int  # ledger rows appended
    review: bool
    reply: Entry | None  # the reply committed with the decision, for the scheduler
    reply_kind: Reply | None
    # Why no reply: opted_out (HELP, not answered), repeated (STOP already confirmed),
    # not_opted_out (START), not_asked (YES), limit (auto-replies), no_route.
    withheld: str | None


class InboundConsent:
    def __init__(
        self,
        config: Config,
        store: Store,
        router: Router,
        scheduler: Scheduler,
        audit: AuditTrail | None = None,
    ) -> None:
        self._config = config.consent
        self._audit = audit
        self._withdrawal = Withdrawal(config.consent)
        self._region = config.queue.default_region
        self._store = store
        self._router = router
        self._scheduler = scheduler
        self._matcher = matcher_for(config.consent)
        self._book = replies_for(config.consent)
        self._answers = Answers(config, store, router)

    # -- on the writer thread, in the inbound's transaction ----------------------------

    def decide(self, conn: sqlite3.Connection, s: StoredInbound) -> Handled | None:
        if not self._config.enabled:
            return None
        match = self._matcher.classify(s.body)
        if match.action is Action.NONE:
            return None
        number = _sender_number(s.sender, self._region)
        if number is None:  # an alphanumeric sender: nobody to answer
            return None
        cipher = self._store.cipher
        assert cipher is not None, "store is not open"
        idx = cipher.blind_index(number)
        program = self._config.program_for_sender(s.recipient)
        step = _Step(conn, idx, number, program, s, match)
        if match.action in _OPT_OUT:
            return self._opt_out(step)
        if match.action in _OPT_IN:
            return self._opt_in(step)
        if match.action is Action.HELP:
            # `STOP 1234` stopped one appointment's texts: still subscribed to the rest.
            out = _currently_out(conn, idx, program, appointments=False)
            if out and not self._config.answer_help_opted_out:
                return step.handled(0, False, withheld="opted_out")
            kind = Reply.HELP_OPTED_OUT if out else Reply.HELP
            return self._answer(step, 0, False, kind, forced=False)
        _review(conn, s, idx, program, "ambiguous")
        return step.handled(0, True)

    def _opt_out(self, step: _Step) -> Handled:
        conn, s = step.conn, step.inbound
        last = self._last_left(conn, step.idx, step.program)
        purpose = None if last is None else last[1]
        if step.match.action is Action.OPT_OUT_ALL or self._config.revoke_all or purpose is None:
            scopes: tuple[str, ...] = (SCOPE_ALL,)
        elif purpose.kind is Kind.MARKETING:
            scopes = (kind_scope(Kind.MARKETING),)
        else:
            scopes = (purpose_scope(purpose), kind_scope(Kind.MARKETING))
        revocation = step.match.action is Action.REVOCATION
        new = [scope for scope in scopes if not _already_out(conn, step.idx, step.program, scope)]
        assert self._store.cipher is not None
        for scope in new:
            entry = ledger.Entry(
                contact_idx=step.idx,
                number=step.number,
                decision="opt_out",
                scope=scope,
                program=step.program,
                source="phrase" if revocation else "keyword",
                at=s.received_at,
                inbound_id=s.id,
                message_id=None if last is None else last[0],
            )
            self._record(conn, entry)
        if revocation:
            _review(conn, s, step.idx, step.program, "phrase")
        kind = Reply.OPT_OUT_ALL if SCOPE_ALL in scopes else Reply.OPT_OUT
        if not new and _confirmed_within(conn, step.idx, step.program, s.received_at - HOUR):
            return step.handled(0, revocation, withheld="repeated")
        # An opt-out that changed something is confirmed once, whatever the limit (MSG-6).
        return self._answer(step, len(new), revocation, kind, forced=bool(new))

    def _opt_in(self, step: _Step) -> Handled:
        conn, s = step.conn, step.inbound
        if not _currently_out(conn, step.idx, step.program):
            return step.handled(0, False, withheld="not_opted_out")
        if step.match.action is Action.OPT_IN_IF_ASKED and not _just_asked(
            conn, step.idx, step.program, s.received_at - ASKED_WINDOW
        ):
            return step.handled(0, False, withheld="not_asked")
        entry = ledger.Entry(
            contact_idx=step.idx,
            number=step.number,
            decision="opt_in",
            scope=SCOPE_ALL,
            program=step.program,
            source="keyword",
            at=s.received_at,
            inbound_id=s.id,
        )
        self._record(conn, entry)
        return self._answer(step, 1, False, Reply.OPT_IN, forced=False)

    def _record(self, conn: sqlite3.Connection, entry: ledger.Entry) -> None:
        assert self._store.cipher is not None
        withdraw.record(conn, self._store.cipher, self._withdrawal, self._audit, entry)

    def _answer(
        self, step: _Step, decisions: int, review: bool, kind: Reply, *, forced: bool
    ) -> Handled:
        conn, s = step.conn, step.inbound
        to = Recipient(step.number, step.idx, step.program)
        if not forced and self._answers.over_limit(conn, to, s.received_at):
            return step.handled(decisions, review, withheld="limit")
        language = self._book.language_for(
            (self._answers.language_of(conn, to), *step.match.languages)
        )
        body = self._book.render(kind, language, step.program)
        entry = self._answers.queue(conn, s, to, body, f"consent:{kind.value}:{step.program}")
        if entry is None:
            return step.handled(decisions, review, withheld="no_route")
        return step.handled(decisions, review, entry, kind)

    def _last_left(
        self, conn: sqlite3.Connection, idx: bytes, program: str
    ) -> tuple[str, Purpose | None] | None:
        """The last message (not a reply of ours) that left for the number in `program`:
        (id, purpose; None if it has none the gateway knows)."""
        rows = conn.execute(
            "SELECT m.id, m.purpose, m.route FROM messages m WHERE m.to_index = ?"
            " AND m.state IN (?,?,?) AND m.route IS NOT NULL"
            " AND coalesce(m.purpose, '') != ?"
            " ORDER BY (SELECT max(e.at) FROM json_each(m.event_seqs) j"
            " JOIN message_events e ON e.seq = j.value"
            " WHERE e.state = 'sending') DESC, m.id DESC LIMIT 200",
            (idx, *_LEFT, Purpose.COMPLIANCE.value),
        ).fetchall()
        for message_id, purpose, route in rows:
            if self._config.program_for_route(route) == program:
                try:
                    return message_id, Purpose(purpose)
                except ValueError:  # none recorded (sent before purposes existed)
                    return message_id, None
        return None

    # -- on the event loop, after the commit -------------------------------------------

    def after(self, h: Handled) -> Awaitable[None] | None:
        """On the event loop once the inbound committed; an awaitable the sink awaits
        (a cluster node's decision, `cluster/consent_inbound.py`), or None."""
        if h.reply is not None:
            self._scheduler.add(h.reply)
        log.info(
            "consent_keyword",
            inbound_id=h.inbound_id,
            action=h.action.value,
            program=h.program,
            decisions=h.decisions,
            review=h.review,
            reply=None if h.reply_kind is None else h.reply_kind.value,
            reply_id=None if h.reply is None else h.reply.id,
            withheld=h.withheld,
        )
        return None


@dataclass(frozen=True, slots=True)
class _Step:
    conn: sqlite3.Connection
    idx: bytes
    number: str
    program: str
    inbound: StoredInbound
    match: Match

    def handled(
        self,
        decisions: int,
        review: bool,
        reply: Entry | None = None,
        kind: Reply | None = None,
        *,
        withheld: str | None = None,
    ) -> Handled:
        return Handled(
            self.inbound.id,
            self.match.action,
            self.program,
            decisions,
            review,
            reply,
            kind,
            withheld,
        )


_E164 = re.compile(r"\+[1-9][0-9]{6,14}", re.ASCII)


def _sender_number(sender: str, region: str) -> str | None:
    """The sender as the E.164 number messages to it are stored under. A number in
    E.164 form is taken as it is, even one the numbering metadata does not know yet
    (a new range): its STOP must count all the same."""
    if _E164.fullmatch(sender):
        return sender
    return normalise_number(sender, region)


def _covering(scope: str) -> tuple[str, ...]:
    """The scopes whose opt-out also stops everything `scope` names."""
    what, _, name = scope.partition(":")
    if what == "purpose":
        return covering_scopes(Purpose(name))
    if what == "kind":
        return (SCOPE_ALL, scope)
    return (SCOPE_ALL,)


def _already_out(conn: sqlite3.Connection, idx: bytes, program: str, scope: str) -> bool:
    """Is `scope` opted out by the newest decision that touches it?"""
    what, _, name = scope.partition(":")
    if what == "purpose":
        touching: tuple[str, ...] = covering_scopes(Purpose(name))
    elif what == "kind":
        purposes = [purpose_scope(p) for p, k in KIND_OF.items() if k.value == name]
        touching = (SCOPE_ALL, scope, *purposes)
    else:
        touching = ()  # "all": every scope touches it
    marks = ",".join("?" * len(touching))
    where = f" AND scope IN ({marks})" if touching else ""
    row = conn.execute(
        "SELECT opted, scope FROM consent_state WHERE contact_idx = ?"  # noqa: S608 - placeholders only
        f" AND program IN (?, '*'){where} ORDER BY seq DESC LIMIT 1",
        (idx, program, *touching),
    ).fetchone()
    return row is not None and row[0] == "out" and row[1] in _covering(scope)


def _currently_out(
    conn: sqlite3.Connection, idx: bytes, program: str, *, appointments: bool = True
) -> bool:
    """Is any opt-out in force in `program`: newer than the last opt-in of everything?
    Without `appointments`, one appointment's opt-out (`STOP 1234`) does not count."""
    row = conn.execute(
        "SELECT 1 FROM consent_state WHERE contact_idx = ? AND program IN (?, '*')"
        " AND opted = 'out' AND (? OR substr(scope, 1, ?) != ?)"
        " AND seq > (SELECT coalesce(max(seq), 0) FROM consent_state"
        " WHERE contact_idx = ? AND program IN (?, '*') AND scope = ? AND opted = 'in')"
        " LIMIT 1",
        (
            idx,
            program,
            appointments,
            len(APPOINTMENT_SCOPE_PREFIX),
            APPOINTMENT_SCOPE_PREFIX,
            idx,
            program,
            SCOPE_ALL,
        ),
    ).fetchone()
    return row is not None


def _confirmations(program: str) -> tuple[str, str]:
    return (
        f"consent:{Reply.OPT_OUT.value}:{program}",
        f"consent:{Reply.OPT_OUT_ALL.value}:{program}",
    )


def _confirmed_within(conn: sqlite3.Connection, idx: bytes, program: str, since: float) -> bool:
    row = conn.execute(
        "SELECT 1 FROM messages WHERE to_index = ? AND category IN (?, ?) AND created_at > ?"
        " LIMIT 1",
        (idx, *_confirmations(program), since),
    ).fetchone()
    return row is not None


def _just_asked(conn: sqlite3.Connection, idx: bytes, program: str, since: float) -> bool:
    """Is the last message made for the number our opt-out confirmation in `program`,
    made since `since`? Only then is a YES an answer to it."""
    row = conn.execute(
        "SELECT category, created_at FROM messages WHERE to_index = ?"
        " ORDER BY created_at DESC, id DESC LIMIT 1",
        (idx,),
    ).fetchone()
    return row is not None and row[0] in _confirmations(program) and row[1] > since


def _review(conn: sqlite3.Connection, s: StoredInbound, idx: bytes, program: str, why: str) -> None:
    """A free-text revocation ("phrase") or a look-alike ("ambiguous") for staff."""
    conn.execute(
        "INSERT INTO consent_review (id, inbound_id, contact_idx, program, reason, created_at)"
        " VALUES (?,?,?,?,?,?)",
        ("rev_" + new_message_id(), s.id, idx, program, why, s.received_at),
    )
