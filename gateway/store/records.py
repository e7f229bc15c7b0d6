"""Typed reads of messages and inbound messages: the SQL and the decryption stay here.

Personal fields come back `Sealed`: still encrypted, opened only by a caller that
may see them (`gateway/usecases/` decides who), so a list that shows no number
decrypts none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gateway.models import Priority, State
from gateway.store.crypto import FieldCipher
from gateway.store.reads import ReadPool


@dataclass(frozen=True, slots=True)
class Sealed:
    """One encrypted personal field of one row; `open()` decrypts it."""

    cipher: FieldCipher
    blob: bytes
    row_id: str
    column: str

    def open(self) -> str:
        return self.cipher.decrypt(self.blob, self.row_id, self.column)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    token_id: str | None
    state: State
    priority: Priority
    to: Sealed
    body: Sealed
    reference: Sealed | None
    encoding: str
    segments: int
    route_hint: str | None
    route: str | None
    category: str | None
    created_at: float
    updated_at: float
    send_at: float | None
    expires_at: float
    attempts: int
    possible_duplicate: bool
    error_code: str | None
    receipt_overdue: bool
    purpose: str | None = None  # None only for messages stored before purposes existed


@dataclass(frozen=True, slots=True)
class StoredEvent:
    at: float
    state: str
    route: str | None
    carrier_id: str | None
    error_code: str | None
    attempt: int | None


@dataclass(frozen=True, slots=True)
class StoredInbound:
    id: str
    seq: int  # commit order: the polling cursor (`inbound.seq`, migration 7)
    route: str
    sender: Sealed
    body: Sealed
    received_at: float
    incomplete: bool


@dataclass(frozen=True, slots=True)
class MessageQuery:
    """Which messages to list, newest first; every field optional."""

    owner: str | None = None  # only this token's messages
    state: State | None = None
    priority: Priority | None = None
    route: str | None = None
    receipt_overdue: bool | None = None
    since: float | None = None
    until: float | None = None
    to: str | None = None  # an E.164 number, matched through the blind index
    before: str | None = None  # a message id: the cursor


_MESSAGE_COLUMNS = (
    "id, token_id, state, priority, to_ct, body_ct, reference_ct, encoding, segments,"
    " route_hint, route, category, created_at, updated_at, send_at, expires_at, attempts,"
    " possible_duplicate, error_code, receipt_overdue, purpose"
)
_INBOUND_COLUMNS = "id, seq, route, sender_ct, body_ct, received_at, incomplete"


def time_ordered(q: MessageQuery) -> bool:
    """A time range or a state pages by creation time, through the index by state and
    creation time (migration 36; a range of every state merges each state's walk), so a
    walk over a range reads only the range, not every newer row."""
    return q.state is not None or q.since is not None or q.until is not None


def message_list_sql(
    q: MessageQuery, cipher: FieldCipher, limit: int, cursor_at: float | None = None
) -> tuple[str, tuple[Any, ...]]:
    """Newest first: by id, or by creation time (then id) in a time range or a state
    (`time_ordered`), so the index by state and creation time reads only the range
    asked (by id the walk would pass every newer message first). Ids are made at accept, so the two
    orders agree but for messages accepted in the same instant."""
    by_time = time_ordered(q)
    # In a time range, `+` keeps the index by route (in id order) out: the walk by
    # creation time stops at a page, where its would sort every match.
    plus = "+" if by_time else ""
    # A number's messages are a few rows by `messages_to`: with one, a state or a time
    # range must not take its own index (a state's walk at 5 M passed every row of
    # that state: 409 ms for `to` + `status=failed` in bench/growth.py, 1 ms after).
    only_to = "+" if q.to is not None else ""
    where: list[tuple[str, tuple[Any, ...]]] = []
    if q.before is not None and by_time and cursor_at is not None:
        # After the cursor (its creation time `cursor_at`) in (created_at, id) order.
        # First: the planner takes the first of equal bounds, and this one starts the
        # walk at the cursor, not at `until`.
        where.append(("(created_at, id) < (?, ?)", (cursor_at, q.before)))
    elif q.before is not None:
        where.append(("id < ?", (q.before,)))
    if q.owner is not None:
        where.append(("token_id = ?", (q.owner,)))
    if q.state is not None:
        where.append((f"{only_to}state = ?", (q.state.value,)))
    if q.priority is not None:
        where.append(("priority = ?", (int(q.priority),)))
    if q.route is not None:
        where.append((f"{plus}route = ?", (q.route,)))
    if q.receipt_overdue is not None:
        # Not `(receipt_overdue = 1) = ?`: the partial index needs the plain term.
        overdue = "receipt_overdue = 1" if q.receipt_overdue else "receipt_overdue != 1"
        where.append((overdue, ()))
    if q.since is not None:
        where.append((f"{only_to}created_at >= ?", (q.since,)))
    if q.until is not None:
        where.append((f"{only_to}created_at < ?", (q.until,)))
    if q.to is not None:
        where.append(("to_index = ?", (cipher.blind_index(q.to),)))
    if by_time and q.state is None and q.to is None:
        return _each_state_newest_first(where, limit)
    sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages"  # noqa: S608 - fixed columns
    if where:
        sql += " WHERE " + " AND ".join(clause for clause, _ in where)
    order = " ORDER BY created_at DESC, id DESC" if by_time else " ORDER BY id DESC"
    params = [v for _, values in where for v in values]
    return sql + order + " LIMIT ?", (*params, limit)


def _each_state_newest_first(
    where: list[tuple[str, tuple[Any, ...]]], limit: int
) -> tuple[str, tuple[Any, ...]]:
    """A time range of every state: the newest `limit` of each state's range of
    `messages_state` (by state, then creation time), merged. There is no index by
    creation time alone (migration 41: every accept wrote a page of it, bench/README.md
    "Disk writes per message"); nine short walks, each stopping at a page."""
    conditions = "".join(f" AND {clause}" for clause, _ in where)
    params = [v for _, values in where for v in values]
    arm = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE state = ?{conditions}"  # noqa: S608 - fixed columns
    sql = " UNION ALL ".join(arm for _ in State) + " ORDER BY created_at DESC, id DESC LIMIT ?"
    arms = [v for s in State for v in (s.value, *params)]
    return sql, (*arms, limit)


class Records:
    """The read side of messages and inbound messages."""

    def __init__(self, reader: ReadPool, cipher: FieldCipher) -> None:
        self._reader = reader
        self._cipher = cipher

    def _seal(self, blob: bytes, row_id: str, column: str) -> Sealed:
        return Sealed(self._cipher, blob, row_id, column)

    def _message(self, r: Sequence[Any]) -> StoredMessage:
        mid = r[0]
        return StoredMessage(
            id=mid,
            token_id=r[1],
            state=State(r[2]),
            priority=Priority(r[3]),
            to=self._seal(r[4], mid, "to"),
            body=self._seal(r[5], mid, "body"),
            reference=None if r[6] is None else self._seal(r[6], mid, "reference"),
            encoding=r[7],
            segments=r[8],
            route_hint=r[9],
            route=r[10],
            category=r[11],
            created_at=r[12],
            updated_at=r[13],
            send_at=r[14],
            expires_at=r[15],
            attempts=r[16],
            possible_duplicate=bool(r[17]),
            error_code=r[18],
            receipt_overdue=r[19] == 1,
            purpose=r[20],
        )

    def _inbound(self, r: Sequence[Any]) -> StoredInbound:
        iid = r[0]
        return StoredInbound(
            iid,
            r[1],
            r[2],
            self._seal(r[3], iid, "sender"),
            self._seal(r[4], iid, "body"),
            r[5],
            bool(r[6]),
        )

    # -- messages ----------------------------------------------------------------------

    async def message(self, message_id: str) -> StoredMessage | None:
        row = await self._reader.one(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?",  # noqa: S608 - fixed columns
            (message_id,),
        )
        return None if row is None else self._message(row)

    async def events(self, message_id: str) -> list[StoredEvent]:
        """Every state of a message in order, its creation first."""
        rows = await self._reader.all(
            # The creation, implied by the row: blocked at accept (blocked, and with no
            # event: blocked is final, and a block at claim writes one), held at accept
            # (`held_for`), or queued or scheduled as the client asked.
            "SELECT created_at AS at, CASE WHEN accept_block THEN 'blocked'"
            " WHEN send_at > created_at THEN 'scheduled' ELSE 'queued' END AS state,"
            " NULL AS route, NULL AS carrier_id,"
            " CASE WHEN accept_block THEN error_code ELSE held_for END AS error_code,"
            " CASE WHEN accept_block OR held_for IS NOT NULL THEN 0 END AS attempt, 0 AS seq"
            " FROM (SELECT *, state = 'blocked' AND event_seqs = '[]' AS accept_block"
            " FROM messages WHERE id = ?) m"
            # Stored before `held_for`: a hold or block at accept is an event row.
            " WHERE NOT EXISTS (SELECT 1 FROM json_each(m.event_seqs) j"
            " JOIN message_events e ON e.seq = j.value"
            " WHERE e.at = m.created_at AND e.route IS NULL AND e.attempt = 0"
            " AND e.state IN ('blocked', 'scheduled'))"
            # Its events by the seqs its row keeps (migration 38).
            " UNION ALL SELECT at, state, route, carrier_id, error_code, attempt, seq"
            " FROM message_events WHERE seq IN (SELECT j.value FROM messages m,"
            " json_each(m.event_seqs) j WHERE m.id = ?) ORDER BY seq",
            (message_id, message_id),
        )
        return [StoredEvent(*row[:6]) for row in rows]

    async def messages(self, q: MessageQuery, limit: int) -> list[StoredMessage]:
        """Newest first (`message_list_sql`); an unknown cursor pages by id alone."""
        cursor_at = None
        if q.before is not None and time_ordered(q):
            row = await self._reader.one(
                "SELECT created_at FROM messages WHERE id = ?", (q.before,)
            )
            cursor_at = None if row is None else float(row[0])
        rows = await self._reader.all(*message_list_sql(q, self._cipher, limit, cursor_at))
        return [self._message(r) for r in rows]

    # -- inbound -----------------------------------------------------------------------

    async def inbound(self, inbound_id: str) -> StoredInbound | None:
        row = await self._reader.one(
            f"SELECT {_INBOUND_COLUMNS} FROM inbound WHERE id = ?",  # noqa: S608 - fixed columns
            (inbound_id,),
        )
        return None if row is None else self._inbound(row)

    async def inbound_newest(self, before: int | None, limit: int) -> list[StoredInbound]:
        """Newest first; `before` a seq (the previous page's last)."""
        sql = f"SELECT {_INBOUND_COLUMNS} FROM inbound"  # noqa: S608 - fixed columns
        params: tuple[Any, ...] = ()
        if before is not None:
            sql += " WHERE seq < ?"
            params = (before,)
        rows = await self._reader.all(sql + " ORDER BY seq DESC LIMIT ?", (*params, limit))
        return [self._inbound(r) for r in rows]

    async def inbound_after(self, after: int, limit: int) -> list[StoredInbound]:
        """Oldest first, committed after the message whose seq is `after` (0: all).

        `seq` is given inside the writer's transaction, in commit order, so a reader
        that sees a seq also sees every smaller one: nothing lands behind a cursor."""
        rows = await self._reader.all(
            f"SELECT {_INBOUND_COLUMNS} FROM inbound WHERE seq > ?"  # noqa: S608 - fixed columns
            " ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [self._inbound(r) for r in rows]
