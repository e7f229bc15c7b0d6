"""The outbox's SQL: rows written with the changes they report, and what the
dispatcher (`gateway/integrations/outbox.py`) reads and records.

Writers call the row helpers inside their own transaction (the hot paths add one
`executemany` per group). Rows carry ids, states and codes only; personal fields are
read from their encrypted columns at delivery, for consumers configured to get them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.integrations.events import (
    APPOINTMENT_REPLY,
    CONSENT_CHANGED,
    EVENT_TYPES,
    MESSAGE_INBOUND,
    MESSAGE_STATUS,
    ROUTE_HEALTH,
)
from gateway.models import State

if TYPE_CHECKING:
    from gateway.store.store import Store

MESSAGE_STATES = frozenset(state.value for state in State)

INSERT_ROW = (
    "INSERT INTO outbox (type, at, message_id, route, state, code, attempt) VALUES (?,?,?,?,?,?,?)"
)

# Attempt states of one event for one consumer (`outbox_deliveries.state`).
PENDING = "pending"
DELIVERED = "delivered"
DEAD = "dead"
REDELIVER = "redeliver"


def keep_only(
    conn: sqlite3.Connection, types: Collection[str], states: Collection[str] | None = None
) -> None:
    """On the writer's connection, outbox rows of `types` only, and `message.status`
    rows only of `states` (None: every state): a temporary BEFORE INSERT trigger drops
    the others (RAISE(IGNORE) skips the row, the statement and its transaction go on),
    so a gateway with no consumer for a type or state writes none of it and no writer
    has to know who listens. Lasts as long as the connection; the dispatcher sets it at
    every start."""
    global _status_kept
    conn.execute("DROP TRIGGER IF EXISTS temp.outbox_unwanted")
    unknown = set(types) - EVENT_TYPES
    if unknown:
        raise ValueError(f"unknown event types {sorted(unknown)}")
    if states is not None and (odd := set(states) - MESSAGE_STATES):
        raise ValueError(f"unknown message states {sorted(odd)}")
    skip_states = states is not None and MESSAGE_STATUS in types and set(states) != MESSAGE_STATES
    if MESSAGE_STATUS not in types:
        _status_kept = (conn, frozenset())
    else:
        _status_kept = (conn, frozenset(states) if skip_states and states is not None else None)
    if set(types) == EVENT_TYPES and not skip_states:
        return
    # Literals, not parameters (a trigger cannot take any): names from EVENT_TYPES and
    # MESSAGE_STATES only.
    kept = ",".join(f"'{t}'" for t in sorted(types))
    when = f"NEW.type NOT IN ({kept})" if kept else "1"
    if skip_states and states is not None:
        wanted = ",".join(f"'{s}'" for s in sorted(states))
        when += f" OR (NEW.type = '{MESSAGE_STATUS}' AND NEW.state NOT IN ({wanted}))"
    conn.execute(
        "CREATE TEMP TRIGGER outbox_unwanted BEFORE INSERT ON main.outbox"
        f" WHEN {when} BEGIN SELECT RAISE(IGNORE); END"
    )


# The `message.status` states the last `keep_only` kept, with its connection (the
# writer's): None every state, empty none. `write_status` leaves out on that connection
# the rows the trigger would drop (3-4 us of the writer's CPU each, two a dispatched
# message when no consumer takes `sending` and `sent`); on any other, the trigger does.
_status_kept: tuple[sqlite3.Connection, frozenset[str] | None] | None = None


def write_status(conn: sqlite3.Connection, events: Sequence[tuple[Any, ...]]) -> None:
    """Outbox rows for `message_events` rows (message_id, at, state, route,
    carrier_id, error_code, attempt), in the caller's transaction."""
    kept = _status_kept
    if kept is not None and kept[0] is conn and kept[1] is not None:
        states = kept[1]
        events = [e for e in events if e[2] in states]
        if not events:
            return
    conn.executemany(
        INSERT_ROW, [(MESSAGE_STATUS, e[1], e[0], e[3], e[2], e[5], e[6]) for e in events]
    )


def write_inbound(conn: sqlite3.Connection, inbound_id: str, route: str, at: float) -> None:
    conn.execute(INSERT_ROW, (MESSAGE_INBOUND, at, inbound_id, route, None, None, None))


def inbound_statement(inbound_id: str, route: str, at: float) -> tuple[str, tuple[Any, ...]]:
    return INSERT_ROW, (MESSAGE_INBOUND, at, inbound_id, route, None, None, None)


def write_health(conn: sqlite3.Connection, changes: Iterable[tuple[str, str]], at: float) -> None:
    """One `route.health` row per (route, state) change."""
    conn.executemany(
        INSERT_ROW, [(ROUTE_HEALTH, at, None, route, state, None, None) for route, state in changes]
    )


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    id: str
    type: str
    at: float
    message_id: str | None
    route: str | None
    state: str | None
    code: str | None
    attempt: int | None

    def data(self) -> dict[str, Any]:
        """The event's `data`: ids, states and codes, never a number or a text."""
        if self.type == MESSAGE_STATUS:
            return {
                "message_id": self.message_id,
                "state": self.state,
                "route": self.route,
                "error_code": self.code,
                "attempts": self.attempt,
            }
        if self.type == MESSAGE_INBOUND:
            return {"inbound_id": self.message_id, "route": self.route}
        if self.type == CONSENT_CHANGED:
            # A ledger entry: its id, program, scope and decision (see gateway.consent.ledger).
            return {
                "consent_id": self.message_id,
                "program": self.route,
                "scope": self.state,
                "decision": self.code,
            }
        if self.type == APPOINTMENT_REPLY:
            # A reply row: its id, the appointment (None: unmatched), intent, outcome
            # (see gateway.replies.worklist_sql).
            return {
                "reply_id": self.message_id,
                "appointment_id": self.route,
                "intent": self.state,
                "outcome": self.code,
            }
        return {"route": self.route, "state": self.state}


@dataclass(frozen=True, slots=True)
class Attempt:
    """Where one event stands for one consumer."""

    consumer: str
    seq: int
    state: str
    attempts: int
    first_at: float
    last_at: float
    next_at: float | None
    reason: str | None
    type: str | None = None
    event_id: str | None = None


ROW_COLUMNS = "seq, id, type, at, message_id, route, state, code, attempt"
ROW_COLUMNS_O = ", ".join(f"o.{c.strip()}" for c in ROW_COLUMNS.split(","))

# The personal fields of each event type's subject, by id (the id first).
_PHI_READS = {
    MESSAGE_STATUS: "SELECT id, to_ct, body_ct FROM messages WHERE id IN ({marks})",
    MESSAGE_INBOUND: (
        "SELECT id, sender_ct, recipient_ct, body_ct FROM inbound WHERE id IN ({marks})"
    ),
    CONSENT_CHANGED: (  # the contact the decision is about
        "SELECT l.id, c.idx, c.number_ct, c.patient_ref_ct FROM consent_ledger l"
        " JOIN contacts c ON c.idx = l.contact_idx WHERE l.id IN ({marks})"
    ),
}


def rows_after(conn: sqlite3.Connection, position: int, limit: int) -> list[OutboxRow]:
    cur = conn.execute(
        f"SELECT {ROW_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608 - fixed columns
        (position, limit),
    )
    return [OutboxRow(*r) for r in cur.fetchall()]


def join_consumer(conn: sqlite3.Connection, name: str) -> int:
    """The consumer's position; a new one starts at the end (no history replayed)."""
    conn.execute(
        "INSERT OR IGNORE INTO outbox_consumers (name, position)"
        " SELECT ?, coalesce(max(seq), 0) FROM outbox",
        (name,),
    )
    row = conn.execute("SELECT position FROM outbox_consumers WHERE name = ?", (name,)).fetchone()
    return int(row[0])


def record(
    conn: sqlite3.Connection,
    attempt: Attempt,
    *,
    advance: bool,
) -> None:
    """Store one attempt's outcome; with `advance`, the consumer has finished with
    every event up to this one (delivered or dead)."""
    conn.execute(
        "INSERT OR REPLACE INTO outbox_deliveries (consumer, seq, state, attempts, first_at,"
        " last_at, next_at, reason) VALUES (?,?,?,?,?,?,?,?)",
        (
            attempt.consumer,
            attempt.seq,
            attempt.state,
            attempt.attempts,
            attempt.first_at,
            attempt.last_at,
            attempt.next_at,
            attempt.reason,
        ),
    )
    if advance:
        conn.execute(
            "UPDATE outbox_consumers SET position = max(position, ?) WHERE name = ?",
            (attempt.seq, attempt.consumer),
        )


def record_many(conn: sqlite3.Connection, done: Sequence[Attempt], position: int) -> None:
    """`record` for a run of deliveries of one consumer, and its `position` (which
    events held back behind a failed one may keep below some of these)."""
    conn.executemany(
        "INSERT OR REPLACE INTO outbox_deliveries (consumer, seq, state, attempts, first_at,"
        " last_at, next_at, reason) VALUES (?,?,?,?,?,?,?,?)",
        [
            (a.consumer, a.seq, a.state, a.attempts, a.first_at, a.last_at, a.next_at, a.reason)
            for a in done
        ],
    )
    conn.execute(
        "UPDATE outbox_consumers SET position = max(position, ?) WHERE name = ?",
        (position, done[0].consumer),
    )


def mark_redeliver(conn: sqlite3.Connection, consumer: str, seq: int) -> bool:
    """A dead letter back in line; False if there is no such dead letter (atomic, so
    two admins pressing the button queue it once)."""
    row = conn.execute(
        "UPDATE outbox_deliveries SET state = ?, next_at = NULL WHERE consumer = ?"
        " AND seq = ? AND state = ? RETURNING seq",
        (REDELIVER, consumer, seq, DEAD),
    ).fetchone()
    return row is not None


def prune(conn: sqlite3.Connection, before: float) -> int:
    """Drop delivered history older than `before`, and outbox rows every consumer has
    passed that no dead letter still needs; never the newest row (it keeps `seq`
    growing)."""
    conn.execute(
        "DELETE FROM outbox_deliveries WHERE state = ? AND last_at < ?", (DELIVERED, before)
    )
    return conn.execute(
        "DELETE FROM outbox WHERE at < ? AND seq < (SELECT max(seq) FROM outbox)"
        " AND seq <= (SELECT coalesce(min(position), 9223372036854775807) FROM outbox_consumers)"
        " AND seq NOT IN (SELECT seq FROM outbox_deliveries WHERE state != ?)",
        (before, DELIVERED),
    ).rowcount


ATTEMPT_COLUMNS = (
    "d.consumer, d.seq, d.state, d.attempts, d.first_at, d.last_at, d.next_at, d.reason,"
    " o.type, o.id"
)


def attempts_sql(where: str) -> str:
    return (
        f"SELECT {ATTEMPT_COLUMNS} FROM outbox_deliveries d"  # noqa: S608 - fixed clauses
        f" LEFT JOIN outbox o ON o.seq = d.seq WHERE {where} ORDER BY d.last_at DESC LIMIT ?"
    )


def decrypt_phi(decrypt: Callable[[Any, str, str], str], kind: str, r: Any) -> dict[str, Any]:
    """One subject's personal fields (a `_PHI_READS` row) for an event of `kind`;
    `decrypt(blob, row_id, column)` is the store's."""
    subject = r[0]
    if kind == MESSAGE_STATUS:
        return {"to": decrypt(r[1], subject, "to"), "body": decrypt(r[2], subject, "body")}
    if kind == MESSAGE_INBOUND:
        return {
            "from": decrypt(r[1], subject, "sender"),
            "to": None if r[2] is None else decrypt(r[2], subject, "recipient"),
            "text": decrypt(r[3], subject, "body"),
        }
    contact = "contact:" + bytes(r[1]).hex()  # ledger.contact_row_id
    return {
        "number": decrypt(r[2], contact, "number"),
        "patient_ref": None if r[3] is None else decrypt(r[3], contact, "patient_ref"),
    }


class OutboxStore:
    """The dispatcher's reads and records (reads through the pool, writes through the
    writer, each one short: nothing here waits on a network)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def poll(self) -> float | None:
        return None  # every commit goes through this node's writer, which wakes the lanes

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        hooks = self._store.writer.after_commit
        hooks.append(wake)
        return lambda: hooks.remove(wake) if wake in hooks else None

    async def lead(self, consumer: str) -> bool:
        return True  # one node: every lane is its own

    async def close(self) -> None:
        pass

    async def position(self, consumer: str) -> int:
        r = await self._store.reader.one(
            "SELECT position FROM outbox_consumers WHERE name = ?", (consumer,)
        )
        return int(r[0]) if r else 0

    async def join(self, names: Sequence[str]) -> dict[str, int]:
        """Each consumer's position (new ones at the end); forget consumers no longer
        configured, so their positions do not hold back pruning."""

        def job(conn: sqlite3.Connection) -> dict[str, int]:
            marks = ",".join("?" * len(names)) or "NULL"
            conn.execute(f"DELETE FROM outbox_consumers WHERE name NOT IN ({marks})", names)  # noqa: S608 - placeholders only
            return {name: join_consumer(conn, name) for name in names}

        return await self._store.writer.run(job)

    async def keep_only(
        self, types: Collection[str], states: Collection[str] | None = None
    ) -> None:
        """From now on, write outbox rows of these event types (and message states)
        only (`keep_only`); the store's accept path, told the types too, does not even
        build the others."""
        await self._store.writer.run(lambda conn: keep_only(conn, types, states))
        self._store.outbox_types = frozenset(types)

    async def after(self, position: int, limit: int) -> list[OutboxRow]:
        rows = await self._store.reader.all(
            f"SELECT {ROW_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608 - fixed columns
            (position, limit),
        )
        return [OutboxRow(*r) for r in rows]

    async def row(self, seq: int) -> OutboxRow | None:
        r = await self._store.reader.one(
            f"SELECT {ROW_COLUMNS} FROM outbox WHERE seq = ?",  # noqa: S608 - fixed columns
            (seq,),
        )
        return None if r is None else OutboxRow(*r)

    async def last_seq(self) -> int:
        r = await self._store.reader.one("SELECT coalesce(max(seq), 0) FROM outbox")
        return int(r[0]) if r else 0

    async def attempt(self, consumer: str, seq: int) -> Attempt | None:
        rows = await self._store.reader.all(
            attempts_sql("d.consumer = ? AND d.seq = ?"), (consumer, seq, 1)
        )
        return Attempt(*rows[0]) if rows else None

    async def record_delivered(self, done: Sequence[Attempt], position: int) -> None:
        """First-try deliveries of one consumer, and its position."""
        await self._store.writer.run(lambda conn: record_many(conn, done, position))

    async def record(self, attempt: Attempt, *, advance: bool) -> None:
        await self._store.writer.run(lambda conn: record(conn, attempt, advance=advance))

    async def set_position(self, consumer: str, seq: int) -> None:
        await self._store.writer.run(
            lambda conn: conn.execute(
                "UPDATE outbox_consumers SET position = max(position, ?) WHERE name = ?",
                (seq, consumer),
            )
        )

    async def due_redeliveries(self, consumer: str, now: float) -> list[int]:
        rows = await self._store.reader.all(
            "SELECT seq FROM outbox_deliveries WHERE consumer = ? AND state = ?"
            " AND (next_at IS NULL OR next_at <= ?) ORDER BY seq",
            (consumer, REDELIVER, now),
        )
        return [int(r[0]) for r in rows]

    async def redeliver(self, consumer: str, seq: int) -> bool:
        return await self._store.writer.run(lambda conn: mark_redeliver(conn, consumer, seq))

    async def prune(self, before: float) -> int:
        return await self._store.writer.run(lambda conn: prune(conn, before))

    async def recent(self, limit: int, *, state: str | None = None) -> list[Attempt]:
        if state is None:
            rows = await self._store.reader.all(attempts_sql("1"), (limit,))
        else:
            rows = await self._store.reader.all(attempts_sql("d.state = ?"), (state, limit))
        return [Attempt(*r) for r in rows]

    async def after_with_attempts(
        self, consumer: str, position: int, limit: int
    ) -> tuple[list[OutboxRow], dict[int, Attempt]]:
        """`after`, and the consumer's earlier attempts at those rows,
        in one statement: a lane's round reads the store once."""
        rows = await self._store.reader.all(
            f"SELECT {ROW_COLUMNS_O}, d.state, d.attempts, d.first_at, d.last_at, d.next_at,"  # noqa: S608 - fixed columns
            " d.reason FROM outbox o LEFT JOIN outbox_deliveries d"
            " ON d.consumer = ? AND d.seq = o.seq WHERE o.seq > ? ORDER BY o.seq LIMIT ?",
            (consumer, position, limit),
        )
        found = [OutboxRow(*r[:9]) for r in rows]
        tried = {
            row.seq: Attempt(
                consumer, row.seq, r[9], r[10], r[11], r[12], r[13], r[14], row.type, row.id
            )
            for row, r in zip(found, rows, strict=True)
            if r[9] is not None
        }
        return found, tried

    async def phi(self, row: OutboxRow) -> dict[str, Any] | None:
        """The personal fields an event reports, decrypted (for consumers that may
        have them): `to`/`body` of a message, `from`/`to`/`text` of an inbound one,
        `number`/`patient_ref` of a consent decision's contact."""
        return (await self.phi_many([row])).get(row.seq)

    async def phi_many(self, rows: Sequence[OutboxRow]) -> dict[int, dict[str, Any]]:
        """`phi` for a batch of rows, by seq: one read per event type present, not one
        per event (rows whose subject is gone, or that carry none, are left out)."""
        by_type: dict[str, dict[str, list[int]]] = {}
        for row in rows:
            if row.message_id is not None and row.type in _PHI_READS:
                by_type.setdefault(row.type, {}).setdefault(row.message_id, []).append(row.seq)
        found: dict[int, dict[str, Any]] = {}
        for kind, subjects in by_type.items():
            ids = list(subjects)
            marks = ",".join("?" * len(ids))
            for r in await self._store.reader.all(_PHI_READS[kind].format(marks=marks), ids):
                fields = decrypt_phi(self._store.decrypt, kind, r)
                for seq in subjects[r[0]]:
                    found[seq] = fields
        return found

    async def callback_urls(self, message_ids: Collection[str]) -> dict[str, str]:
        """The callback URLs of those of these messages that have one, decrypted: one
        read for a lane's whole batch (most messages have none)."""
        if not message_ids:
            return {}
        ids = list(message_ids)
        where = f"id IN ({','.join('?' * len(ids))}) AND callback_ct IS NOT NULL"
        rows = await self._store.reader.all(
            f"SELECT id, callback_ct FROM messages WHERE {where}",  # noqa: S608 - placeholders only
            ids,
        )
        return {r[0]: self._store.decrypt(r[1], r[0], "callback") for r in rows}
