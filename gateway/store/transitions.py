"""Message state changes as SQL, on the writer's connection: each checks the lifecycle
table and makes the change in one UPDATE, and writes its event row (and outbox row) in
the same transaction. The group functions (`claim_many`, `mark_sent_many`,
`receipts_many`) are the hot paths the writer runs for many messages at once.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from gateway.lifecycle import IllegalTransition, check_transition, sources_of
from gateway.models import State
from gateway.store import outbox_sql
from gateway.store.claim_check import ClaimCheck, Held, claim_verdict, hold
from gateway.store.event_seqs import INSERT_NUMBERED, next_seq


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change to apply: `target` and the columns that change with it."""

    message_id: str
    target: State
    route: str | None = None
    error_code: str | None = None
    due_at: float | None = None
    attempts: int | None = None
    possible_duplicate: bool | None = None
    carrier_id: str | None = None
    count_attempt: bool = False  # one more submit: `attempts + 1`, in the same UPDATE
    # `route` is the message's already (its claim wrote it): recorded in the event, not
    # written to the row again, where it would rewrite its entry in any index on it.
    route_kept: bool = False


# A claim given back untried: it raised, though it may have committed (`give_back`).
CLAIM_UNANSWERED = "store:claim_unanswered"


class _PartsPending(Exception):
    """The message still waits for receipts of other parts."""


def apply(
    conn: sqlite3.Connection,
    t: Transition,
    now: float,
    *,
    only_from: State | None = None,
    returning: str = "",
    unless_parts_pending: bool = False,
    events: list[tuple[Any, ...]] | None = None,
) -> tuple[Any, ...]:
    """Apply `t` and record its event; raises (changing nothing) if it is illegal, or
    if the message is not in `only_from` when that is given. Returns the row's
    `attempts` followed by the `returning` columns. With `events`, the event row is
    appended there for the caller to write with the rest of its group."""
    route = None if t.route_kept else t.route
    changed = [value for value in (route, t.error_code, t.due_at, t.attempts) if value is not None]
    duplicate = t.possible_duplicate
    if duplicate is not None:
        changed.append(int(duplicate))
    shape = (
        route is not None,
        t.error_code is not None,
        t.due_at is not None,
        t.attempts is not None,
        duplicate is not None,
        t.count_attempt,
    )
    sql = update_sql(t.target, shape, only_from, returning, unless_parts_pending, True)
    where = (t.message_id, t.message_id) if unless_parts_pending else (t.message_id,)
    pending = () if events is None else events
    seq = next_seq(conn, pending)
    # One statement checks the transition, makes it and lists its event on the row;
    # only a refusal looks further.
    row: tuple[Any, ...] | None = conn.execute(
        sql, (t.target.value, now, seq, *changed, *where)
    ).fetchone()
    if row is None:
        if unless_parts_pending:
            raise _PartsPending(t.message_id)
        _refuse(conn, t.message_id, t.target)
    event = (
        t.message_id, now, t.target.value, t.route, t.carrier_id, t.error_code, row[0], seq, 1
    )  # fmt: skip
    if events is None:
        write_events(conn, [event])
    else:
        events.append(event)
    return row


def _refuse(conn: sqlite3.Connection, message_id: str, target: State) -> NoReturn:
    """Why a transition's UPDATE matched no row: no such message, or not from its state."""
    current = conn.execute("SELECT state FROM messages WHERE id = ?", (message_id,)).fetchone()
    if current is None:
        raise LookupError(f"no message {message_id}")
    raise IllegalTransition(State(current[0]), target)


# States no frequency cap counts: a message in one has `uncounted` = 1, which the index by
# recipient holds in place of its state (migration 32). Every change of state is made
# by `update_sql`'s UPDATE and every message is inserted by `Store.insert_statements`:
# both set it (a trigger would, too, at several times the cost of each UPDATE).
UNCOUNTED = frozenset({State.BLOCKED, State.CANCELLED, State.EXPIRED})


INSERT_EVENT = (
    "INSERT INTO message_events (message_id, at, state, route, carrier_id, error_code,"
    " attempt) VALUES (?,?,?,?,?,?,?)"
)


def block_waiting(conn: sqlite3.Connection, message_id: str, reason: str, now: float) -> bool:
    """A `queued` or `scheduled` message made `blocked` with `reason`, in the caller's
    transaction (with its event and outbox row); False if it was no longer waiting."""
    try:
        apply(conn, Transition(message_id, State.BLOCKED, error_code=reason), now)
    except IllegalTransition:
        return False
    return True


def write_events(conn: sqlite3.Connection, events: Sequence[tuple[Any, ...]]) -> None:
    """A group's transitions: their history rows (numbered, `event_seqs.py`) and their
    outbox rows, together."""
    conn.executemany(INSERT_NUMBERED, events)
    outbox_sql.write_status(conn, events)


INSERT_PART = (
    "INSERT OR REPLACE INTO carrier_ids (route, carrier_id, message_id, part) VALUES (?,?,?,?)"
)
CLAIM_RETURNING = "to_ct, body_ct, encoding, priority, attempts, possible_duplicate"
_OPTIONAL_COLUMNS = ("route", "error_code", "due_at", "attempts", "possible_duplicate")


@functools.lru_cache(maxsize=256)
def update_sql(
    target: State,
    shape: tuple[bool, ...],
    only_from: State | None,
    returning: str,
    unless_parts_pending: bool,
    appends_seq: bool = False,
) -> str:
    """The UPDATE for one shape of transition (built once, then served from the cache):
    parameters are the target, the time, with `appends_seq` the event's seq (appended
    to `event_seqs`), the columns `shape` marks present, the id (and the id again when
    `unless_parts_pending`). The last item of `shape` adds one to `attempts`, which
    RETURNING then reports."""
    sets = ["state = ?", "updated_at = ?"]
    if appends_seq:
        sets.append("event_seqs = json_insert(event_seqs, '$[#]', ?)")
    *optional, count_attempt = shape
    sets += [
        f"{column} = ?"
        for column, present in zip(_OPTIONAL_COLUMNS, optional, strict=True)
        if present
    ]
    if count_attempt:
        sets.append("attempts = attempts + 1")
    if target in UNCOUNTED:  # final states: a message never leaves them
        sets.append("uncounted = 1")
    if only_from is not None:
        check_transition(only_from, target)
        sources = f"'{only_from.value}'"
    else:
        sources = _SOURCES[target]
    where = f"id = ? AND state IN ({sources})"
    if unless_parts_pending:
        where += (
            " AND NOT EXISTS (SELECT 1 FROM carrier_ids WHERE message_id = ? AND part > 0"
            " AND state != 'delivered')"
        )
    extra = f", {returning}" if returning else ""
    return f"UPDATE messages SET {', '.join(sets)} WHERE {where} RETURNING attempts{extra}"  # noqa: S608 - fixed column names and states


_SOURCES = {
    target: ",".join(f"'{s.value}'" for s in sorted(sources_of(target))) or "NULL"
    for target in State
}


_RECEIPT_FINAL = {"delivered": State.DELIVERED, "failed": State.FAILED, "expired": State.EXPIRED}
# Whether a message has several parts: theirs are numbered from 1 and only they are in
# the index by message (`carrier_ids_parts`, migration 35); a one-part message's one
# row is part 0 and never written to it (a page per `sent` saved, bench/README.md).
_SEVERAL_PARTS = "SELECT 1 FROM carrier_ids WHERE message_id = ? AND part > 0 LIMIT 1"


def part_numbers(count: int) -> range:
    """The `part` of each of a message's `count` carrier ids, in order."""
    return range(1, count + 1) if count > 1 else range(1)


def _apply_receipt(
    conn: sqlite3.Connection,
    route: str,
    carrier_id: str,
    state: str,
    error_code: str | None,
    now: float,
    events: list[tuple[Any, ...]] | None = None,
) -> tuple[str, State] | bool | None:
    """Record a receipt for a known part; returns (message id, new state) when the
    message changed, None when it did not, False when no such part is recorded."""
    if state not in _RECEIPT_FINAL:
        # Intermediate states never overwrite anything; the part may still be unknown.
        known = conn.execute(
            "SELECT 1 FROM carrier_ids WHERE route = ? AND carrier_id = ?", (route, carrier_id)
        ).fetchone()
        return None if known else False
    part = conn.execute(
        "SELECT message_id, state FROM carrier_ids WHERE route = ? AND carrier_id = ?",
        (route, carrier_id),
    ).fetchone()
    if part is None:
        return False
    message_id = part[0]
    if part[1] in _RECEIPT_FINAL:  # duplicates are idempotent: a final part stays as it is
        return None
    # A message of one part (the common case) keeps its part row as `sent` wrote it: the
    # message's own state says it all, and a duplicate stops at `only_from=SENT`. Not
    # rewriting the row saves a page per receipt (bench/README.md, "Disk writes").
    alone = conn.execute(_SEVERAL_PARTS, (message_id,)).fetchone() is None
    if not alone:
        conn.execute(
            "UPDATE carrier_ids SET state = ?, error_code = ? WHERE route = ? AND carrier_id = ?",
            (state, error_code, route, carrier_id),
        )
    target = _RECEIPT_FINAL[state]
    transition = Transition(
        message_id,
        target,
        route=route,
        carrier_id=carrier_id,
        error_code=error_code,
        route_kept=True,
    )
    try:
        if target is State.DELIVERED and not alone:
            # Delivered once no part is left undelivered (a failed part already failed it).
            apply(
                conn,
                transition,
                now,
                only_from=State.SENT,
                unless_parts_pending=True,
                events=events,
            )
        else:
            apply(conn, transition, now, only_from=State.SENT, events=events)
    except (IllegalTransition, LookupError, _PartsPending):
        return None
    return message_id, target


def claim_many(
    conn: sqlite3.Connection, items: list[tuple[str, str, float, ClaimCheck | None]]
) -> list[tuple[Any, ...] | Held | None]:
    """`queued -> sending` for each item, its row returned (None if it was no longer
    queued, or `blocked` now: an opt-out committed before this claim keeps it from
    leaving, MSG-5); the group's events go in one executemany."""
    claimed: list[tuple[Any, ...] | Held | None] = []
    events: list[tuple[Any, ...]] = []
    for message_id, route, now, check in items:
        verdict = None if check is None else claim_verdict(conn, check, message_id, route, now)
        if isinstance(verdict, Held):
            hold(conn, message_id, verdict, now, events)
            claimed.append(verdict)
            continue
        if verdict is not None:
            blocked = Transition(message_id, State.BLOCKED, route=route, error_code=verdict)
            apply(conn, blocked, now, events=events)
            claimed.append(None)
            continue
        # Every submit counts: the claim that hands the message to a driver is an attempt
        # (the scheduler gives it back if the route could not take the message).
        transition = Transition(message_id, State.SENDING, route=route, count_attempt=True)
        try:
            row = apply(conn, transition, now, returning=CLAIM_RETURNING, events=events)
        except IllegalTransition:
            claimed.append(None)
        else:
            claimed.append(row[1:])
    write_events(conn, events)
    return claimed


def mark_sent_many(
    conn: sqlite3.Connection, items: list[tuple[str, str, Sequence[str], float]]
) -> list[State]:
    """`sending -> sent` with the carrier's ids for each item, then any receipts that
    overtook the submit's answer. Events and ids are written in one executemany each,
    before the early receipts (which need them) are looked at."""
    states = []
    events: list[tuple[Any, ...]] = []
    parts: list[tuple[Any, ...]] = []

    def write() -> None:
        write_events(conn, events)
        conn.executemany(INSERT_PART, parts)
        events.clear()
        parts.clear()

    # Receipts rarely overtake their submit's answer: look them up only if any wait.
    early_waiting = conn.execute("SELECT 1 FROM early_receipts LIMIT 1").fetchone() is not None
    for message_id, route, carrier_ids, now in items:
        transition = Transition(
            message_id, State.SENT, route=route, carrier_id=",".join(carrier_ids), route_kept=True
        )
        apply(conn, transition, now, events=events)
        numbers = part_numbers(len(carrier_ids))
        parts += [(route, cid, message_id, n) for n, cid in zip(numbers, carrier_ids, strict=True)]
        state = State.SENT
        if early_waiting:
            write()
            for cid in carrier_ids:
                early = conn.execute(
                    "DELETE FROM early_receipts WHERE route = ? AND carrier_id = ?"
                    " RETURNING state, error_code",
                    (route, cid),
                ).fetchone()
                if early is not None:
                    applied = _apply_receipt(conn, route, cid, early[0], early[1], now, events)
                    state = applied[1] if isinstance(applied, tuple) else state
        states.append(state)
    write()
    return states


_ReceiptItem = tuple[str, str, str, str | None, float, Sequence[str]]


def receipts_many(
    conn: sqlite3.Connection, items: list[_ReceiptItem]
) -> list[tuple[str, State] | None]:
    outcomes: list[tuple[str, State] | None] = []
    events: list[tuple[Any, ...]] = []
    for route, carrier_id, state, error_code, now, alternate_ids in items:
        for candidate in (carrier_id, *alternate_ids):
            applied = _apply_receipt(conn, route, candidate, state, error_code, now, events)
            if applied is not False:
                outcomes.append(applied if isinstance(applied, tuple) else None)
                break
        else:
            conn.execute(
                "INSERT OR REPLACE INTO early_receipts VALUES (?,?,?,?,?)",
                (route, carrier_id, state, error_code, now),
            )
            outcomes.append(None)
    write_events(conn, events)
    return outcomes
