"""STOP, START and HELP on a cluster node: the decision, its suppression, its review and
the one answer commit in ONE PostgreSQL transaction.

Inbound messages are stored in the shared tables (`inbound.py`), and what a keyword
decides is shared too. `decide` runs on the node's SQLite writer right after the
inbound's PostgreSQL commit, as the keyword step, but only classifies the text
(nothing of consent is written to SQLite); the sink then awaits `after`, which in
one PostgreSQL transaction, under the contact's advisory lock: appends the opt-out
(or opt-in) to the shared ledger with `consent_state` (the suppression every node's
next claim reads, R-OPT-1 across nodes), and inserts the confirmation into the shared
queue under the inbound's `reply_id`, so one inbound never gets two. The rules are
SQLite's (`gateway/consent/inbound.py`): the scopes from the last message that left
for the number in the program, a STOP that changed something confirmed whatever the
auto-reply limit, a repeated one within the hour not confirmed again; START only when
opted out, YES only right after our opt-out confirmation; HELP answered (the
opted-out text if opted out) within the auto-reply limit, counted on the shared queue
under the contact's lock, so no two nodes together answer an auto-responder more than
the limit allows (R-OPT-1). A revocation phrase also opens a review, and a look-alike
only a review, in the shared queue (`consent_reviews.py`), one per inbound message.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import structlog
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.cluster import consent_store, seal_guard
from gateway.cluster.consent_reviews import open_review
from gateway.cluster.consent_store import SharedWithdrawal
from gateway.cluster.queue_store import ClusterQueue
from gateway.config import Config
from gateway.consent import ledger
from gateway.consent.answers import ANSWERED_IN_HOUR, HOUR, Recipient, answered_params, reply_id
from gateway.consent.inbound import (
    _LEFT,
    _OPT_IN,
    _OPT_OUT,
    ASKED_WINDOW,
    Handled,
    InboundConsent,
    _confirmations,
    _covering,
    _sender_number,
)
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
from gateway.router import Router
from gateway.scheduler import Scheduler
from gateway.scheduler_feed import Entry
from gateway.store.inbound_parts import StoredInbound
from gateway.store.store import Store

log = structlog.get_logger("smsgw.consent")
Conn = AsyncConnection[TupleRow]


class ClusterInboundConsent(InboundConsent):
    def __init__(
        self,
        config: Config,
        store: Store,
        router: Router,
        scheduler: Scheduler,
        queue: ClusterQueue,
        node_id: str,
        withdrawal: SharedWithdrawal,
    ) -> None:
        super().__init__(config, store, router, scheduler)
        self._queue = queue
        self._node_id = node_id
        self._shared_withdrawal = withdrawal
        # Classified on the writer thread, decided after the commit: by inbound id.
        self._pending: dict[str, tuple[StoredInbound, Match, str, bytes]] = {}

    def decide(self, conn: Any, s: StoredInbound) -> Handled | None:
        if not self._config.enabled:
            return None
        match = self._matcher.classify(s.body)
        if match.action is Action.NONE:
            return None
        number = _sender_number(s.sender, self._region)
        if number is None:
            return None
        assert self._store.cipher is not None, "store is not open"
        idx = self._store.cipher.blind_index(number)
        program = self._config.program_for_sender(s.recipient)
        self._pending[s.id] = (s, match, number, idx)
        return Handled(s.id, match.action, program, 0, False, None, None, "pending")

    def after(self, h: Handled) -> Awaitable[None] | None:
        found = self._pending.pop(h.inbound_id, None)
        return None if found is None else self._decide_shared(h.program, *found)

    async def _decide_shared(
        self, program: str, s: StoredInbound, match: Match, number: str, idx: bytes
    ) -> None:
        step = _Shared(self, s, match, Recipient(number, idx, program))

        async def decided() -> Handled | None:
            async with self._queue.pool.connection() as conn, conn.transaction():
                await consent_store.lock_contacts(conn, [idx])
                if await _one(conn, "SELECT 1 FROM messages WHERE id = %s", reply_id(s.id)):
                    return None  # decided before (the same inbound handed over again)
                if match.action in _OPT_OUT:
                    return await step.opt_out(conn)
                if match.action in _OPT_IN:
                    return await step.opt_in(conn)
                if match.action is Action.HELP:
                    return await step.help(conn)
                return await step.ambiguous(conn)

        # Sealed in its transaction: refused under a retired key, it runs again under the
        # current one (a STOP must not be lost to a key this node had not taken up yet).
        done = await seal_guard.retried(self._queue.keys, decided)
        if done is None:
            return
        if done.reply is not None:
            self._scheduler.add(done.reply)
        log.info(
            "consent_keyword",
            inbound_id=s.id,
            action=match.action.value,
            program=program,
            decisions=done.decisions,
            review=done.review,
            reply=None if done.reply_kind is None else done.reply_kind.value,
            reply_id=None if done.reply is None else done.reply.id,
            withheld=done.withheld,
            shared=True,
        )


class _Shared:
    """One keyword's decision in the shared transaction (`_decide_shared`)."""

    def __init__(
        self, owner: ClusterInboundConsent, s: StoredInbound, match: Match, to: Recipient
    ) -> None:
        self.o, self.s, self.match, self.to = owner, s, match, to

    def _done(
        self,
        decisions: int,
        reply: Entry | None = None,
        kind: Reply | None = None,
        withheld: str | None = None,
    ) -> Handled:
        review = self.match.action in (Action.REVOCATION, Action.AMBIGUOUS)
        return Handled(
            self.s.id, self.match.action, self.to.program, decisions, review, reply, kind, withheld
        )

    async def opt_out(self, conn: Conn) -> Handled:
        to, s = self.to, self.s
        last = await _last_left(conn, self.o, to.idx, to.program)
        purpose = None if last is None else last[1]
        if self.match.action is Action.OPT_OUT_ALL or self.o._config.revoke_all or purpose is None:
            scopes: tuple[str, ...] = (SCOPE_ALL,)
        elif purpose.kind is Kind.MARKETING:
            scopes = (kind_scope(Kind.MARKETING),)
        else:
            scopes = (purpose_scope(purpose), kind_scope(Kind.MARKETING))
        revocation = self.match.action is Action.REVOCATION
        new = [sc for sc in scopes if not await _already_out(conn, to.idx, to.program, sc)]
        for scope in new:
            entry = ledger.Entry(
                contact_idx=to.idx,
                number=to.number,
                decision="opt_out",
                scope=scope,
                program=to.program,
                source="phrase" if revocation else "keyword",
                at=s.received_at,
                inbound_id=s.id,
                message_id=None if last is None else last[0],
            )
            await self._append(conn, entry)
        if revocation:
            await self._review(conn, "phrase")
        kind = Reply.OPT_OUT_ALL if SCOPE_ALL in scopes else Reply.OPT_OUT
        since = s.received_at - HOUR
        if not new and await _one(
            conn,
            "SELECT 1 FROM messages WHERE to_index = %s AND category = ANY(%s)"
            " AND created_at > %s LIMIT 1",
            to.idx,
            list(_confirmations(to.program)),
            since,
        ):
            return self._done(0, withheld="repeated")
        # An opt-out that changed something is confirmed once, whatever the limit (MSG-6).
        return await self._answer(conn, len(new), kind, forced=bool(new))

    async def opt_in(self, conn: Conn) -> Handled:
        to, s = self.to, self.s
        if not await _currently_out(conn, to.idx, to.program):
            return self._done(0, withheld="not_opted_out")
        if self.match.action is Action.OPT_IN_IF_ASKED:
            last = await _one(
                conn,
                "SELECT category, created_at FROM messages WHERE to_index = %s"
                " ORDER BY created_at DESC, id DESC LIMIT 1",
                to.idx,
            )
            asked = last is not None and last[0] in _confirmations(to.program)
            if not (asked and last[1] > s.received_at - ASKED_WINDOW):
                return self._done(0, withheld="not_asked")
        entry = ledger.Entry(
            contact_idx=to.idx,
            number=to.number,
            decision="opt_in",
            scope=SCOPE_ALL,
            program=to.program,
            source="keyword",
            at=s.received_at,
            inbound_id=s.id,
        )
        await self._append(conn, entry)
        return await self._answer(conn, 1, Reply.OPT_IN, forced=False)

    async def help(self, conn: Conn) -> Handled:
        # `STOP 1234` stopped one appointment's texts: still subscribed to the rest.
        out = await _currently_out(conn, self.to.idx, self.to.program, appointments=False)
        if out and not self.o._config.answer_help_opted_out:
            return self._done(0, withheld="opted_out")
        kind = Reply.HELP_OPTED_OUT if out else Reply.HELP
        return await self._answer(conn, 0, kind, forced=False)

    async def ambiguous(self, conn: Conn) -> Handled:
        await self._review(conn, "ambiguous")
        return self._done(0)

    async def _review(self, conn: Conn, why: str) -> None:
        o = self.o
        await open_review(
            conn, o._queue.cipher, self.s, self.to.idx, self.to.program, why, o._node_id
        )

    async def _append(self, conn: Conn, entry: ledger.Entry) -> None:
        # The shared keyring's cipher: it takes up a rotation made on any node.
        await consent_store.append(conn, self.o._queue.cipher, entry, self.o._node_id)
        await self.o._shared_withdrawal.after(conn, entry)  # the suppression, in this step

    async def _answer(self, conn: Conn, decisions: int, kind: Reply, *, forced: bool) -> Handled:
        to, s, o = self.to, self.s, self.o
        if not forced:
            (sent,) = await _one(
                conn, ANSWERED_IN_HOUR.replace("?", "%s"), *answered_params(to, s.received_at)
            )
            if o._answers.limit_reached(int(sent)):
                return self._done(decisions, withheld="limit")
        found = await _one(conn, "SELECT language FROM contacts WHERE idx = %s", to.idx)
        language = o._book.language_for(
            (None if found is None else found[0], *self.match.languages)
        )
        body = o._book.render(kind, language, to.program)
        made = o._answers.answer(s, to, body, f"consent:{kind.value}:{to.program}")
        if made is None:
            return self._done(decisions, withheld="no_route")
        message, entry = made
        await o._queue.insert_within(conn, [message], None)
        return self._done(decisions, entry, kind)


async def _one(conn: Conn, sql: str, *params: Any) -> Any:
    return await (await conn.execute(sql.encode(), params)).fetchone()


async def _last_left(
    conn: Conn, o: ClusterInboundConsent, idx: bytes, program: str
) -> tuple[str, Purpose | None] | None:
    """`InboundConsent._last_left` on the shared queue."""
    rows = await (
        await conn.execute(
            "SELECT m.id, m.purpose, m.route FROM messages m WHERE m.to_index = %s"
            " AND m.state = ANY(%s) AND m.route IS NOT NULL"
            " AND coalesce(m.purpose, '') <> %s"
            " ORDER BY (SELECT max(e.at) FROM message_events e WHERE e.message_id = m.id"
            " AND e.state = 'sending') DESC NULLS LAST, m.id DESC LIMIT 200",
            (idx, list(_LEFT), Purpose.COMPLIANCE.value),
        )
    ).fetchall()
    for message_id, purpose, route in rows:
        if o._config.program_for_route(route) == program:
            try:
                return message_id, Purpose(purpose)
            except ValueError:  # none recorded
                return message_id, None
    return None


async def _already_out(conn: Conn, idx: bytes, program: str, scope: str) -> bool:
    """`inbound._already_out` on PostgreSQL."""
    what, _, name = scope.partition(":")
    if what == "purpose":
        touching: tuple[str, ...] = covering_scopes(Purpose(name))
    elif what == "kind":
        purposes = [purpose_scope(p) for p, k in KIND_OF.items() if k.value == name]
        touching = (SCOPE_ALL, scope, *purposes)
    else:
        touching = ()
    sql = "SELECT opted, scope FROM consent_state WHERE contact_idx = %s AND program IN (%s, '*')"
    params: list[Any] = [idx, program]
    if touching:
        sql += " AND scope = ANY(%s)"
        params.append(list(touching))
    row = await _one(conn, sql + " ORDER BY seq DESC LIMIT 1", *params)
    return row is not None and row[0] == "out" and row[1] in _covering(scope)


async def _currently_out(
    conn: Conn, idx: bytes, program: str, *, appointments: bool = True
) -> bool:
    """`inbound._currently_out` on PostgreSQL."""
    row = await _one(
        conn,
        "SELECT 1 FROM consent_state WHERE contact_idx = %s AND program IN (%s, '*')"
        " AND opted = 'out' AND (%s OR substr(scope, 1, %s) <> %s)"
        " AND seq > (SELECT coalesce(max(seq), 0) FROM consent_state"
        " WHERE contact_idx = %s AND program IN (%s, '*') AND scope = %s AND opted = 'in')"
        " LIMIT 1",
        idx,
        program,
        appointments,
        len(APPOINTMENT_SCOPE_PREFIX),
        APPOINTMENT_SCOPE_PREFIX,
        idx,
        program,
        SCOPE_ALL,
    )
    return row is not None
