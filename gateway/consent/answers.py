"""The gateway's own short answers to a patient's text: the consent keywords' replies
(STOP, START, HELP) and the appointment replies' ("Thanks, confirmed").

Both are `compliance` messages, written with the store's own insert statements in the
transaction that decided them, with the id `reply_id(inbound)` (so a redelivered text
is answered once), limited to `consent.auto_replies_per_hour` per number unless an
answer is owed whatever the count, and sent back by the route the text came in on
where it can carry them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from drivers.text import split
from gateway.config import Config
from gateway.consent.purposes import Purpose
from gateway.consent.settings import policy_table
from gateway.models import Priority
from gateway.router import Router
from gateway.scheduler_feed import Entry
from gateway.store.inbound_parts import StoredInbound
from gateway.store.store import NewMessage, Store

HOUR = 3600.0


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DIGITS = frozenset(_CROCKFORD)
_REPLY_BIT = 1 << 81  # the top bit of an id's 80-bit random part: never set by IdGenerator


def reply_id(inbound_id: str) -> str:
    """The id of the one reply an inbound message may get: deterministic, and never an
    id `new_message_id` makes (its random part stays below 2**79)."""
    if len(inbound_id) != 26 or not set(inbound_id) <= _DIGITS or inbound_id[0] > "3":
        raise ValueError("not a message id")
    value = 0
    for ch in inbound_id:
        value = value * 32 + _CROCKFORD.index(ch)
    value |= _REPLY_BIT
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


# The auto-reply limit's count (R-OPT-1: no loops with auto-responders), the same on
# either backend's `messages` (`?` marks: PostgreSQL's take `%s`), with `answered_params`.
ANSWERED_IN_HOUR = (
    "SELECT count(*) FROM messages WHERE to_index = ? AND purpose = ? AND created_at > ?"
)


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who the answer goes to: the number, its blind index, and the program whose
    routes and title the answer takes."""

    number: str
    idx: bytes
    program: str


def answered_params(to: Recipient, at: float) -> tuple[bytes, str, float]:
    return to.idx, Purpose.COMPLIANCE.value, at - HOUR


class Answers:
    def __init__(self, config: Config, store: Store, router: Router) -> None:
        self._consent = config.consent
        self._store = store
        self._router = router
        self.priority = Priority.parse(policy_table(config.consent)[Purpose.COMPLIANCE].priority)
        self._expires_after = config.queue.policy(self.priority).expires_after

    def over_limit(self, conn: sqlite3.Connection, to: Recipient, at: float) -> bool:
        """Whether the number has had `auto_replies_per_hour` answers in the hour to `at`."""
        (sent,) = conn.execute(ANSWERED_IN_HOUR, answered_params(to, at)).fetchone()
        return self.limit_reached(int(sent))

    def limit_reached(self, answered: int) -> bool:
        """Whether `answered` answers in the hour (`ANSWERED_IN_HOUR`) spend the limit."""
        return answered >= self._consent.auto_replies_per_hour

    def language_of(self, conn: sqlite3.Connection, to: Recipient) -> str | None:
        row = conn.execute("SELECT language FROM contacts WHERE idx = ?", (to.idx,)).fetchone()
        return None if row is None else row[0]

    def queue(
        self,
        conn: sqlite3.Connection,
        inbound: StoredInbound,
        to: Recipient,
        body: str,
        category: str,
    ) -> Entry | None:
        """Insert the answer to `inbound`; its scheduler entry (to add after the commit),
        or None when no route can carry it."""
        made = self.answer(inbound, to, body, category)
        if made is None:
            return None
        message, entry = made
        for sql, params in self._store.insert_statements(message):
            conn.execute(sql, params)
        return entry

    def answer(
        self, inbound: StoredInbound, to: Recipient, body: str, category: str
    ) -> tuple[NewMessage, Entry] | None:
        """The answer to `inbound` and its scheduler entry, for either backend to insert;
        None when no route can carry it."""
        candidates, hint = self._routes_for(to, inbound.route)
        if not candidates:
            return None
        plan = split(body)
        message = NewMessage(
            id=reply_id(inbound.id),
            token_id=None,
            priority=self.priority,
            to=to.number,
            body=body,
            encoding=plan.encoding.value,
            segments=plan.segments,
            created_at=inbound.received_at,
            expires_at=inbound.received_at + self._expires_after,
            route_hint=hint,
            category=category,
            purpose=Purpose.COMPLIANCE.value,
        )
        entry = Entry(
            message.id, self.priority, inbound.received_at, message.expires_at, candidates
        )
        return message, entry

    def _routes_for(self, to: Recipient, inbound_route: str) -> tuple[tuple[str, ...], str | None]:
        """By the route the text came in on if it can carry the answer (the same sender
        identity), else by one of the program's routes, else any."""
        mine = [p.routes for p in self._consent.programs if p.name == to.program]
        for hint in (inbound_route, *(mine[0] if mine else ())):
            candidates = self._router.candidates(to.number, self.priority, hint)
            if candidates:
                return candidates, hint
        return self._router.candidates(to.number, self.priority), None
