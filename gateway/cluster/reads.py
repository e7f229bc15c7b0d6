"""`MessageReads` on the shared PostgreSQL queue: what every node's API and panel show.

The same answers as the SQLite store's reads (`gateway/store/records.py`), from the
shared `messages` and `message_events`: newest first, by id, or by creation time then
id in a time range without a state (as `records.time_ordered` decides, so a cursor
means the same on both), numbers found through the blind index. Each filter has an
index (cluster migration 6; `tests/pg/test_reads_contract.py` checks the plans), so a
page reads about a page of rows, not the queue.

Differences kept out of the answers: an accept on PostgreSQL writes its creation event
(attempt 0) where SQLite implies it from the row (attempt absent unless held or
blocked at accept); `events` reads it back as SQLite does. `seq` orders events by
insertion, not by commit: the dashboard's tail (`after`) may miss an event whose
transaction committed after a later one was read (a count off by one, never a row).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.cluster.lease import Pool
from gateway.cluster.shared_keys import KeyringWatch
from gateway.models import Priority, State
from gateway.store.crypto import FieldCipher, header_generation
from gateway.store.event_log import LoggedEvent
from gateway.store.message_reads import Waiting
from gateway.store.records import MessageQuery, Sealed, StoredEvent, StoredMessage, time_ordered

COLUMNS = (
    "id, token_id, state, priority, to_ct, body_ct, reference_ct, encoding, segments,"
    " route_hint, route, category, created_at, updated_at, send_at, expires_at, attempts,"
    " possible_duplicate, error_code, receipt_overdue, purpose"
)


def stored_message(cipher: FieldCipher, row: Sequence[Any]) -> StoredMessage:
    """A `messages` row (`COLUMNS`) with its personal fields still sealed."""
    mid = row[0]
    return StoredMessage(
        id=mid,
        token_id=row[1],
        state=State(row[2]),
        priority=Priority(row[3]),
        to=Sealed(cipher, bytes(row[4]), mid, "to"),
        body=Sealed(cipher, bytes(row[5]), mid, "body"),
        reference=None if row[6] is None else Sealed(cipher, bytes(row[6]), mid, "reference"),
        encoding=row[7],
        segments=row[8],
        route_hint=row[9],
        route=row[10],
        category=row[11],
        created_at=row[12],
        updated_at=row[13],
        send_at=row[14],
        expires_at=row[15],
        attempts=row[16],
        possible_duplicate=bool(row[17]),
        error_code=row[18],
        receipt_overdue=row[19] == 1,
        purpose=row[20],
    )


def message_list_sql(
    q: MessageQuery, cipher: FieldCipher, limit: int, cursor_at: float | None = None
) -> tuple[str, tuple[Any, ...]]:
    """`records.message_list_sql` in PostgreSQL's terms (the same order and cursor)."""
    by_time = time_ordered(q)
    where: list[tuple[str, tuple[Any, ...]]] = []
    if q.before is not None and by_time and cursor_at is not None:
        where.append(("(created_at, id) < (%s, %s)", (cursor_at, q.before)))
    elif q.before is not None:
        where.append(("id < %s", (q.before,)))
    if q.owner is not None:
        where.append(("token_id = %s", (q.owner,)))
    if q.state is not None:
        where.append(("state = %s", (q.state.value,)))
    if q.priority is not None:
        where.append(("priority = %s", (int(q.priority),)))
    if q.route is not None:
        where.append(("route = %s", (q.route,)))
    if q.receipt_overdue is not None:
        where.append(("receipt_overdue = 1" if q.receipt_overdue else "receipt_overdue <> 1", ()))
    if q.since is not None:
        where.append(("created_at >= %s", (q.since,)))
    if q.until is not None:
        where.append(("created_at < %s", (q.until,)))
    if q.to is not None:
        where.append(("to_index = %s", (cipher.blind_index(q.to),)))
    sql = f"SELECT {COLUMNS} FROM messages"  # noqa: S608 - fixed columns
    if where:
        sql += " WHERE " + " AND ".join(clause for clause, _ in where)
    order = " ORDER BY created_at DESC, id DESC" if by_time else " ORDER BY id DESC"
    params = [v for _, values in where for v in values]
    return sql + order + " LIMIT %s", (*params, limit)


class ClusterReads:
    """`MessageReads` and the dashboard's `ActivityLog` on the shared queue."""

    def __init__(self, pool: Pool, cipher: FieldCipher, keys: KeyringWatch | None = None) -> None:
        self._pool = pool
        self._cipher = cipher
        self._keys = keys

    async def _opened(self, rows: list[Any]) -> list[StoredMessage]:
        """The rows as records; a row sealed by a rotation this node has not taken up
        yet (re-encrypted since the last heartbeat) makes it take the rotation up now."""
        known = self._cipher.generations
        if self._keys is not None and any(
            header_generation(bytes(r[4])) not in known for r in rows
        ):
            await self._keys.check()
        return [stored_message(self._cipher, r) for r in rows]

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql.encode(), params)).fetchall()

    async def message(self, message_id: str) -> StoredMessage | None:
        rows = await self._all(
            f"SELECT {COLUMNS} FROM messages WHERE id = %s",  # noqa: S608 - fixed columns
            (message_id,),
        )
        return (await self._opened(rows))[0] if rows else None

    async def events(self, message_id: str) -> list[StoredEvent]:
        rows = await self._all(
            "SELECT at, state, route, carrier_id, error_code, attempt FROM message_events"
            " WHERE message_id = %s ORDER BY seq",
            (message_id,),
        )
        events = [StoredEvent(*r) for r in rows]
        first = events[0] if events else None
        if first is not None and first.route is None and first.error_code is None:
            # The accept's own row: SQLite implies it with no attempt (module doc).
            events[0] = StoredEvent(first.at, first.state, None, first.carrier_id, None, None)
        return events

    async def messages(self, q: MessageQuery, limit: int) -> list[StoredMessage]:
        cursor_at = None
        if q.before is not None and time_ordered(q):
            found = await self._all("SELECT created_at FROM messages WHERE id = %s", (q.before,))
            cursor_at = float(found[0][0]) if found else None
        rows = await self._all(*message_list_sql(q, self._cipher, limit, cursor_at))
        return await self._opened(rows)

    async def sending_counts(self) -> dict[int, int]:
        rows = await self._all(
            "SELECT priority, count(*) FROM messages WHERE state = 'sending' GROUP BY priority"
        )
        return {int(p): int(n) for p, n in rows}

    async def sending_by_route(self) -> dict[str, int]:
        rows = await self._all(
            "SELECT route, count(*) FROM messages WHERE state = 'sending' GROUP BY route"
        )
        return {str(r): int(n) for r, n in rows}

    async def possible_duplicates(self) -> int:
        rows = await self._all(
            "SELECT count(*) FROM messages WHERE possible_duplicate"
            " AND state IN ('queued', 'sending')"
        )
        return int(rows[0][0])

    async def waiting(self, now: float) -> Waiting:
        rows = await self._all(
            # Constants, not parameters: the planner proves the partial index from them.
            "SELECT priority, due_at <= %s, count(*), min(due_at) FROM messages"
            " WHERE state IN ('queued', 'scheduled') GROUP BY 1, 2",
            (now,),
        )
        return Waiting.of(rows)

    # -- the dashboard's tail (`ActivityLog`) --------------------------------------------

    async def first_seq_since(self, since: float) -> int:
        """The seq of the first event at or after `since` (the last seq + 1 if none):
        a binary search on the primary key, as the SQLite event log does."""
        top = await self._all("SELECT coalesce(max(seq), 0) FROM message_events")
        lo, hi = 1, int(top[0][0]) + 1
        while lo < hi:
            mid = (lo + hi) // 2
            row = await self._all(
                "SELECT at FROM message_events WHERE seq >= %s ORDER BY seq LIMIT 1", (mid,)
            )
            if not row or row[0][0] >= since:
                hi = mid
            else:
                lo = mid + 1
        return lo

    async def after(self, seq: int, limit: int) -> list[LoggedEvent]:
        rows = await self._all(
            "SELECT seq, at, state, route, error_code FROM message_events"
            " WHERE seq > %s ORDER BY seq LIMIT %s",
            (seq, limit),
        )
        return [LoggedEvent(int(r[0]), float(r[1]), str(r[2]), r[3], r[4]) for r in rows]
