"""The outbox on the cluster's PostgreSQL (`OutboxRepo`, cluster migration 12): events
of the shared queue for every node's webhooks and MQTT, rows as SQLite's.

Written in the transaction of the change: a trigger on `message_events` adds each
status row (every writer of an event, on any node); route health and consent
decisions insert theirs (`health_row`, `consent_row`). Only the types and states some
node's consumers take are written (`outbox_wants`, replaced by each node at its start).

Commit order. A `bigserial` numbers rows as they are inserted, not as their
transactions commit: a reader past row N may later see row N-1 commit, and a position
kept by that number would skip it. So a row carries its transaction's id
(`pg_current_xact_id()`), and consumers see it only once it is *published*: given the
next `seq` from a counter, in (xid, insertion) order, by whichever lane leader reads
next, under a transaction-level advisory lock. Only rows whose xid is below the
snapshot's `xmin` are published: every transaction below `xmin` has ended, and any
transaction still to commit has an xid at or above it, so a published prefix can never
gain a row in its middle. Publishers run one at a time and each sees the last one's
commit, so a reader sees seq 1..N with no hole or none of a batch: the dispatcher's
position (the last finished `seq`) stays exact. We chose this over a reader-side
filter (`xid < xmin ORDER BY seq`), which still skips: a transaction with a smaller
xid may insert a row with a larger seq and commit first. The cost: one UPDATE per row,
and publishing waits for the oldest open transaction on the server (a stuck session
"idle in transaction" delays events; the healthz horizon shows it).

Leadership per consumer is `LaneLocks` (advisory session locks). Positions, attempts
and dead letters are shared, so a new leader resumes where the last one recorded.
`message.inbound` rows are written by the node that files an inbound message, in the
transaction of its shared row (`cluster/inbound.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from drivers.clock import Clock
from gateway.cluster.lease import Pool
from gateway.cluster.outbox_lanes import LaneLocks
from gateway.cluster.queue_sql import Conn
from gateway.integrations.events import (
    CONSENT_CHANGED,
    EVENT_TYPES,
    MESSAGE_INBOUND,
    MESSAGE_STATUS,
    ROUTE_HEALTH,
)
from gateway.store import outbox_sql
from gateway.store.outbox_sql import (
    DEAD,
    DELIVERED,
    MESSAGE_STATES,
    REDELIVER,
    ROW_COLUMNS,
    ROW_COLUMNS_O,
    Attempt,
    OutboxRow,
    OutboxStore,
    decrypt_phi,
)

if TYPE_CHECKING:
    from gateway.store.store import Store

PUBLISH_LOCK = 0x736D7367_77000009  # pg_advisory_xact_lock key: "smsgw" + the outbox
PUBLISH_BATCH = 2000
POLL = 0.5  # seconds: other nodes' commits wake no lane here

INSERT_ROW = (
    "INSERT INTO outbox (type, at, message_id, route, state, code, attempt)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s)"
)

_ANY_TO_PUBLISH = (
    "SELECT EXISTS (SELECT 1 FROM outbox WHERE seq IS NULL"
    " AND xid < pg_snapshot_xmin(pg_current_snapshot()))"
)

# Under PUBLISH_LOCK, in a statement of its own (a fresh snapshot, after the last
# publisher's commit).
_PUBLISH = """
WITH todo AS (
    SELECT ins, row_number() OVER (ORDER BY xid, ins) AS n FROM (
        SELECT ins, xid FROM outbox
        WHERE seq IS NULL AND xid < pg_snapshot_xmin(pg_current_snapshot())
        ORDER BY xid, ins LIMIT %s
    ) AS due
), counter AS (
    UPDATE outbox_published SET last = last + (SELECT count(*) FROM todo)
    RETURNING last - (SELECT count(*) FROM todo) AS base
)
UPDATE outbox o SET seq = counter.base + todo.n FROM todo, counter WHERE o.ins = todo.ins
"""

_UPSERT_ATTEMPT = (
    "INSERT INTO outbox_deliveries (consumer, seq, state, attempts, first_at, last_at,"
    " next_at, reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (consumer, seq) DO UPDATE SET state = excluded.state,"
    " attempts = excluded.attempts, first_at = excluded.first_at,"
    " last_at = excluded.last_at, next_at = excluded.next_at, reason = excluded.reason"
)

_ADVANCE = (
    "UPDATE outbox_consumers SET position = greatest(position, %s), seen_at = %s WHERE name = %s"
)

_PHI_READS = {
    MESSAGE_STATUS: "SELECT id, to_ct, body_ct FROM messages WHERE id = ANY(%s)",
    MESSAGE_INBOUND: "SELECT id, sender_ct, recipient_ct, body_ct FROM inbound WHERE id = ANY(%s)",
    CONSENT_CHANGED: (
        "SELECT l.id, c.idx, c.number_ct, c.patient_ref_ct FROM consent_ledger l"
        " JOIN contacts c ON c.idx = l.contact_idx WHERE l.id = ANY(%s)"
    ),
}


def _attempts_sql(where: str) -> str:
    return (
        f"SELECT {outbox_sql.ATTEMPT_COLUMNS} FROM outbox_deliveries d"  # noqa: S608 - fixed clauses
        f" LEFT JOIN outbox o ON o.seq = d.seq WHERE {where} ORDER BY d.last_at DESC LIMIT %s"
    )


def _tuple(a: Attempt) -> tuple[Any, ...]:
    return (a.consumer, a.seq, a.state, a.attempts, a.first_at, a.last_at, a.next_at, a.reason)


async def health_rows(conn: Conn, changes: Sequence[tuple[str, str]], at: float) -> None:
    """`route.health` rows for (route, state) changes, if some node takes them."""
    if await _wanted(conn, ROUTE_HEALTH):
        async with conn.cursor() as cur:
            await cur.executemany(
                INSERT_ROW, [(ROUTE_HEALTH, at, None, r, s, None, None) for r, s in changes]
            )


async def consent_row(
    conn: Conn, entry_id: str, at: float, program: str, scope: str, decision: str
) -> None:
    """A decision's `consent.changed` row, in the ledger entry's transaction."""
    if await _wanted(conn, CONSENT_CHANGED):
        await conn.execute(
            INSERT_ROW, (CONSENT_CHANGED, at, entry_id, program, scope, decision, None)
        )


async def inbound_row(conn: Conn, inbound_id: str, route: str, at: float) -> None:
    """An inbound message's `message.inbound` row, in its shared row's transaction."""
    if await _wanted(conn, MESSAGE_INBOUND):
        await conn.execute(INSERT_ROW, (MESSAGE_INBOUND, at, inbound_id, route, None, None, None))


async def _wanted(conn: Conn, kind: str) -> bool:
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM outbox_wants WHERE %s = ANY (types))", (kind,)
    )
    row = await cur.fetchone()
    return bool(row and row[0])


class ClusterOutbox:
    """`OutboxRepo` on PostgreSQL for one node. `decrypt(blob, row_id, column)` is the
    shared queue's (its cipher follows key rotations); `local` the node's own store,
    told to write no outbox rows of its own (nobody would read them)."""

    def __init__(
        self,
        pool: Pool,
        node_id: str,
        clock: Clock,
        lanes: LaneLocks,
        decrypt: Callable[[bytes, str, str], str],
        local: Store,
    ) -> None:
        self._pool = pool
        self._node_id = node_id
        self._clock = clock
        self._lanes = lanes
        self._decrypt = decrypt
        self._local = local

    @property
    def poll(self) -> float | None:
        return POLL

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        return lambda: None  # commits are every node's: the lanes poll (`poll`)

    async def lead(self, consumer: str) -> bool:
        return await self._lanes.lead(consumer)

    async def close(self) -> None:
        await self._lanes.close()

    async def keep_only(
        self, types: Collection[str], states: Collection[str] | None = None
    ) -> None:
        """This node's consumers take these types (and message states); rows of a type
        or state no node takes are not written."""
        if unknown := set(types) - EVENT_TYPES:
            raise ValueError(f"unknown event types {sorted(unknown)}")
        if states is not None and (odd := set(states) - MESSAGE_STATES):
            raise ValueError(f"unknown message states {sorted(odd)}")
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO outbox_wants VALUES (%s, %s, %s) ON CONFLICT (node_id)"
                " DO UPDATE SET types = excluded.types, states = excluded.states",
                (self._node_id, sorted(types), None if states is None else sorted(states)),
            )
        await OutboxStore(self._local).keep_only(())

    async def join(self, names: Sequence[str]) -> dict[str, int]:
        """Each consumer's position (a new one at the last published event). Other
        nodes may run other consumers: none is forgotten here; one no node has touched
        for `retention_days` no longer holds back pruning."""
        now = self._clock.time()
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO outbox_consumers (name, position, seen_at)"
                " SELECT n, (SELECT last FROM outbox_published), %s FROM unnest(%s::text[]) n"
                " ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at",
                (now, list(names)),
            )
            cur = await conn.execute(
                "SELECT name, position FROM outbox_consumers WHERE name = ANY(%s)", (list(names),)
            )
            rows = await cur.fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    async def position(self, consumer: str) -> int:
        row = await self._one("SELECT position FROM outbox_consumers WHERE name = %s", (consumer,))
        return int(row[0]) if row else 0

    async def publish(self) -> int:
        """Number the committed rows (see the module's docstring); how many."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(_ANY_TO_PUBLISH)
            row = await cur.fetchone()
            if not (row and row[0]):
                return 0
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (PUBLISH_LOCK,))
                cur = await conn.execute(_PUBLISH, (PUBLISH_BATCH,))
                return cur.rowcount

    async def after_with_attempts(
        self, consumer: str, position: int, limit: int
    ) -> tuple[list[OutboxRow], dict[int, Attempt]]:
        await self.publish()
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {ROW_COLUMNS_O}, d.state, d.attempts, d.first_at, d.last_at,"  # noqa: S608 - fixed columns
                " d.next_at, d.reason FROM outbox o LEFT JOIN outbox_deliveries d"
                " ON d.consumer = %s AND d.seq = o.seq WHERE o.seq > %s ORDER BY o.seq LIMIT %s",
                (consumer, position, limit),
            )
            rows = await cur.fetchall()
        found = [OutboxRow(*r[:9]) for r in rows]
        tried = {
            row.seq: Attempt(
                consumer, row.seq, r[9], r[10], r[11], r[12], r[13], r[14], row.type, row.id
            )
            for row, r in zip(found, rows, strict=True)
            if r[9] is not None
        }
        return found, tried

    async def row(self, seq: int) -> OutboxRow | None:
        r = await self._one(f"SELECT {ROW_COLUMNS} FROM outbox WHERE seq = %s", (seq,))  # noqa: S608 - fixed columns
        return None if r is None else OutboxRow(*r)

    async def last_seq(self) -> int:
        r = await self._one("SELECT last FROM outbox_published", ())
        return int(r[0]) if r else 0

    async def attempt(self, consumer: str, seq: int) -> Attempt | None:
        rows = await self._all(_attempts_sql("d.consumer = %s AND d.seq = %s"), (consumer, seq, 1))
        return Attempt(*rows[0]) if rows else None

    async def record_delivered(self, done: Sequence[Attempt], position: int) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            async with conn.cursor() as cur:
                await cur.executemany(_UPSERT_ATTEMPT, [_tuple(a) for a in done])
            await conn.execute(_ADVANCE, (position, self._clock.time(), done[0].consumer))

    async def record(self, attempt: Attempt, *, advance: bool) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(_UPSERT_ATTEMPT, _tuple(attempt))
            if advance:
                await conn.execute(_ADVANCE, (attempt.seq, self._clock.time(), attempt.consumer))

    async def set_position(self, consumer: str, seq: int) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(_ADVANCE, (seq, self._clock.time(), consumer))

    async def due_redeliveries(self, consumer: str, now: float) -> list[int]:
        rows = await self._all(
            "SELECT seq FROM outbox_deliveries WHERE consumer = %s AND state = %s"
            " AND (next_at IS NULL OR next_at <= %s) ORDER BY seq",
            (consumer, REDELIVER, now),
        )
        return [int(r[0]) for r in rows]

    async def redeliver(self, consumer: str, seq: int) -> bool:
        row = await self._one(
            "UPDATE outbox_deliveries SET state = %s, next_at = NULL WHERE consumer = %s"
            " AND seq = %s AND state = %s RETURNING seq",
            (REDELIVER, consumer, seq, DEAD),
        )
        return row is not None

    async def prune(self, before: float) -> int:
        """Delivered history older than `before`, and published rows every consumer
        touched since then has passed that no dead letter still needs."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM outbox_deliveries WHERE state = %s AND last_at < %s",
                (DELIVERED, before),
            )
            cur = await conn.execute(
                "DELETE FROM outbox o WHERE o.at < %s AND o.seq IS NOT NULL"
                " AND o.seq <= (SELECT coalesce(min(position), 9223372036854775807)"
                "   FROM outbox_consumers WHERE seen_at >= %s)"
                " AND NOT EXISTS (SELECT 1 FROM outbox_deliveries d"
                "   WHERE d.seq = o.seq AND d.state <> %s)",
                (before, before, DELIVERED),
            )
            return cur.rowcount

    async def recent(self, limit: int, *, state: str | None = None) -> list[Attempt]:
        if state is None:
            rows = await self._all(_attempts_sql("true"), (limit,))
        else:
            rows = await self._all(_attempts_sql("d.state = %s"), (state, limit))
        return [Attempt(*r) for r in rows]

    async def phi(self, row: OutboxRow) -> dict[str, Any] | None:
        return (await self.phi_many([row])).get(row.seq)

    async def phi_many(self, rows: Sequence[OutboxRow]) -> dict[int, dict[str, Any]]:
        by_type: dict[str, dict[str, list[int]]] = {}
        for row in rows:
            if row.message_id is not None and row.type in _PHI_READS:
                by_type.setdefault(row.type, {}).setdefault(row.message_id, []).append(row.seq)
        found: dict[int, dict[str, Any]] = {}
        for kind, subjects in by_type.items():
            for r in await self._all(_PHI_READS[kind], (list(subjects),)):
                fields = decrypt_phi(self._decrypt, kind, [r[0], *(_bytes(v) for v in r[1:])])
                for seq in subjects[r[0]]:
                    found[seq] = fields
        return found

    async def callback_urls(self, message_ids: Collection[str]) -> dict[str, str]:
        if not message_ids:
            return {}
        rows = await self._all(
            "SELECT id, callback_ct FROM messages WHERE id = ANY(%s) AND callback_ct IS NOT NULL",
            (list(message_ids),),
        )
        return {r[0]: self._decrypt(bytes(r[1]), r[0], "callback") for r in rows}

    async def _one(self, sql: str, params: Sequence[Any]) -> Any:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql.encode(), params)).fetchone()

    async def _all(self, sql: str, params: Sequence[Any]) -> list[Any]:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql.encode(), params)).fetchall()


def _bytes(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value
