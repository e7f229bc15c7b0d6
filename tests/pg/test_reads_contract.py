"""The message reads' contract (issue 18): the same rows give the same answers on the
SQLite store and on the shared PostgreSQL queue (`MessageReads`), and on PostgreSQL
every filter of the list is answered through an index (`EXPLAIN`).

The rows are made through the send path's interface only (`QueueStore`: accept, claim,
outcomes, receipt sweep), so each backend stores them its own way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from gateway.cluster import nodes
from gateway.cluster.lease import Pool
from gateway.cluster.queue_store import ClusterQueue
from gateway.cluster.reads import ClusterReads, message_list_sql
from gateway.cluster.schema import migrate
from gateway.models import Priority, State
from gateway.store.crypto import FieldCipher
from gateway.store.message_reads import ActivityLog, LocalReads, MessageReads
from gateway.store.queue_store import QueueStore
from gateway.store.records import MessageQuery
from gateway.store.store import NewMessage, Store
from gateway.store.transitions import Transition
from gateway.usecases.activity import Activity
from gateway.usecases.messages import vars_of

NOW = 1_800_000_000.0
ROUTE = "smpp-a"


@dataclass
class Side:
    queue: QueueStore
    reads: MessageReads
    activity: ActivityLog


def cipher() -> FieldCipher:
    return FieldCipher({1: bytes(range(32))}, bytes(range(32, 64)))


@pytest.fixture(params=["sqlite", "postgresql"])
async def side(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Side]:
    if request.param == "sqlite":
        store = Store(tmp_path / "gw.db", bytes(32))
        await store.open()
        try:
            yield Side(store, LocalReads(store), store.event_log)
        finally:
            await store.close()
        return
    dsn: str = request.getfixturevalue("migrated_dsn")
    async with AsyncConnectionPool(dsn, min_size=1, max_size=4, open=False) as pool:
        async with pool.connection() as conn:
            await migrate(conn)
            me = await nodes.register(conn, "node-a", 60.0)
        shared = cipher()
        reads = ClusterReads(pool, shared)
        yield Side(ClusterQueue(pool, shared, lambda: me), reads, reads)


def new(
    name: str,
    at: float,
    *,
    owner: str = "tok-a",
    priority: Priority = Priority.NORMAL,
    to: str = "+15550001",
    send_at: float | None = None,
) -> NewMessage:
    # Ids in creation order, as the gateway makes them.
    return NewMessage(
        id=f"{int(at):012d}-{name}",
        token_id=owner,
        priority=priority,
        to=to,
        body=f"body of {name}",
        encoding="gsm7",
        segments=1,
        created_at=at,
        expires_at=NOW + 3600,
        send_at=send_at,
        purpose="reminder",
    )


async def scenario(q: QueueStore) -> dict[str, str]:
    """Six messages in every kind of place; their ids by name."""
    ms = {
        "old": new("old", NOW - 500),
        "urgent": new(
            "urgent", NOW - 400, owner="tok-b", priority=Priority.CRITICAL, to="+15550002"
        ),
        "later": new("later", NOW - 300, priority=Priority.BULK, send_at=NOW + 600),
        "mid": new("mid", NOW - 200, to="+15550003"),
        "retry": new("retry", NOW - 150, owner="tok-b"),
        "new": new("new", NOW - 100, owner="tok-b", to="+15550002"),
    }
    await q.accept(list(ms.values()))
    ids = {name: m.id for name, m in ms.items()}
    claimed = await q.claim_due(ROUTE, 4, NOW)  # urgent first, then old, mid, retry
    assert [c.id for c in claimed] == [ids["urgent"], ids["old"], ids["mid"], ids["retry"]]
    back = Transition(
        ids["retry"], State.QUEUED, route=ROUTE, error_code="smpp:0x58", due_at=NOW + 30
    )
    await q.record_outcomes(
        [(ids["urgent"], ROUTE, ["c-1"], NOW), (ids["mid"], ROUTE, ["c-2"], NOW)],
        [(back, NOW)],
    )
    # urgent's receipt is overdue; none was asked for mid's class.
    await q.sweep_receipts(NOW + 10, {int(Priority.CRITICAL)}, NOW + 20, 100)
    return ids


async def listed(reads: MessageReads, ids: dict[str, str], limit: int = 10, **q: Any) -> list[str]:
    names = {v: k for k, v in ids.items()}
    return [names[m.id] for m in await reads.messages(MessageQuery(**q), limit)]


async def test_every_filter_of_the_list_answers_alike(side: Side) -> None:
    ids = await scenario(side.queue)
    r = side.reads
    assert await listed(r, ids) == ["new", "retry", "mid", "later", "urgent", "old"]
    assert await listed(r, ids, owner="tok-b") == ["new", "retry", "urgent"]
    assert await listed(r, ids, state=State.SENDING) == ["old"]
    assert await listed(r, ids, state=State.QUEUED) == ["new", "retry"]
    assert await listed(r, ids, state=State.SCHEDULED) == ["later"]
    assert await listed(r, ids, priority=Priority.CRITICAL) == ["urgent"]
    assert await listed(r, ids, route=ROUTE) == ["retry", "mid", "urgent", "old"]
    assert await listed(r, ids, receipt_overdue=True) == ["urgent"]
    assert "urgent" not in await listed(r, ids, receipt_overdue=False)
    assert await listed(r, ids, since=NOW - 300, until=NOW - 150) == ["mid", "later"]
    assert await listed(r, ids, to="+15550002") == ["new", "urgent"]
    assert await listed(r, ids, to="+15550002", owner="tok-a") == []
    # Cursors: by id, and by creation time in a time range.
    assert await listed(r, ids, limit=2, before=ids["mid"]) == ["later", "urgent"]
    assert await listed(r, ids, since=NOW - 1000, before=ids["later"]) == ["urgent", "old"]
    got = await r.message(ids["urgent"])
    assert got is not None and got.to.open() == "+15550002" and got.body.open() == "body of urgent"
    assert got.state is State.SENT and got.route == ROUTE and got.receipt_overdue
    assert await r.message("no-such-id") is None


async def test_details_events_and_counts_answer_alike(side: Side) -> None:
    ids = await scenario(side.queue)
    r = side.reads
    a, b = await r.message(ids["retry"]), await r.message(ids["old"])
    assert a is not None and b is not None
    row = vars_of(a)
    for sealed in ("to", "body", "reference"):
        row.pop(sealed)
    assert row == {
        "id": ids["retry"], "token_id": "tok-b", "state": State.QUEUED,
        "priority": Priority.NORMAL, "encoding": "gsm7", "segments": 1, "route_hint": None,
        "route": ROUTE, "category": None, "created_at": NOW - 150, "updated_at": NOW,
        "send_at": None, "expires_at": NOW + 3600, "attempts": 1, "possible_duplicate": False,
        "error_code": "smpp:0x58", "receipt_overdue": False, "purpose": "reminder",
    }  # fmt: skip
    assert [vars_of(e) for e in await r.events(ids["urgent"])] == [
        {"at": NOW - 400, "state": "queued", "route": None, "carrier_id": None,
         "error_code": None, "attempt": None},
        {"at": NOW, "state": "sending", "route": ROUTE, "carrier_id": None,
         "error_code": None, "attempt": 1},
        {"at": NOW, "state": "sent", "route": ROUTE, "carrier_id": "c-1",
         "error_code": None, "attempt": 1},
        {"at": NOW + 20, "state": "receipt_overdue", "route": ROUTE, "carrier_id": None,
         "error_code": "gateway:receipt_overdue", "attempt": 1},
    ]  # fmt: skip
    assert [e.state for e in await r.events(ids["later"])] == ["scheduled"]
    assert await r.sending_counts() == {int(Priority.NORMAL): 1}
    assert await r.sending_by_route() == {ROUTE: 1}
    assert await r.possible_duplicates() == 0
    waiting = await r.waiting(NOW)
    assert waiting.due == {int(Priority.NORMAL): 1}  # new; retry waits for its backoff
    assert waiting.later == {int(Priority.NORMAL): 1, int(Priority.BULK): 1}
    assert waiting.oldest_due == NOW - 100
    assert (await r.waiting(NOW + 1000)).due == {int(Priority.NORMAL): 2, int(Priority.BULK): 1}


# Each list query, and the index it must walk where a walk newest-first by id (the
# primary key, filtering) would pass many rows for few matches.
async def test_the_dashboards_tail_reads_the_same_changes(side: Side) -> None:
    await scenario(side.queue)
    activity = Activity(store=None, log=side.activity)  # type: ignore[arg-type]
    start = await activity.position_before(NOW - 1)  # after every accept
    changes = await activity.after(start, 100)
    assert Counter((c.state, c.route, c.error_code) for c in changes) == Counter({
        ("sending", ROUTE, None): 4,
        ("sent", ROUTE, None): 2,
        ("queued", ROUTE, "smpp:0x58"): 1,
        ("receipt_overdue", ROUTE, "gateway:receipt_overdue"): 1,
    })  # fmt: skip
    assert [c.position for c in changes] == sorted(c.position for c in changes)
    assert await activity.after(changes[-1].position, 100) == []
    assert await activity.after(changes[3].position, 2) == changes[4:6]


QUERIES: dict[str, tuple[MessageQuery, str | None]] = {
    "newest": (MessageQuery(), "messages_pkey"),
    "owner": (MessageQuery(owner="tok-7"), "messages_list_owner"),
    "state": (MessageQuery(state=State.DELIVERED), None),
    "route": (MessageQuery(route="r-3"), None),
    "overdue": (MessageQuery(receipt_overdue=True), "messages_list_overdue"),
    "time range": (MessageQuery(since=NOW - 5000, until=NOW - 4000), "messages_list_created"),
    "number": (MessageQuery(to="+15550009"), "messages_list_number"),
    "cursor": (MessageQuery(before="m-0020000", state=State.QUEUED), None),
    "owner and state": (MessageQuery(owner="tok-7", state=State.SENT), None),
}


async def test_every_list_query_reads_through_an_index(pool: Pool) -> None:
    """At 30k messages in every state, no list query scans the table."""
    c = cipher()
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO messages (id, token_id, priority, state, route_group, route, to_ct,"
            " to_index, body_ct, encoding, segments, created_at, updated_at, due_at,"
            " expires_at, receipt_overdue)"
            " SELECT 'm-' || lpad(i::text, 7, '0'), 'tok-' || (i %% 50), i %% 4,"
            " (ARRAY['queued','sending','sent','delivered','failed'])[1 + i %% 5], '',"
            " 'r-' || (i %% 10), '\\x01', %s || int4send(i %% 20000), '\\x03', 'gsm7', 1,"
            " %s + i, %s + i, %s + i, %s, (i %% 997 = 0)::int"
            " FROM generate_series(1, 30000) i",
            (b"ix", NOW - 100_000, NOW - 100_000, NOW, NOW + 3600),
        )
        await conn.execute("ANALYZE messages")
        for name, (q, index) in QUERIES.items():
            sql, params = message_list_sql(q, c, 51)
            plan = await (await conn.execute(("EXPLAIN " + sql).encode(), params)).fetchall()
            text = "\n".join(str(line[0]) for line in plan)
            assert "Seq Scan" not in text and "Index" in text, f"{name}:\n{text}"
            assert index is None or f"using {index} " in text, f"{name}:\n{text}"
        for sql in (
            "SELECT priority, due_at <= 1, count(*), min(due_at) FROM messages"
            " WHERE state IN ('queued', 'scheduled') GROUP BY 1, 2",
            "SELECT count(*) FROM messages WHERE possible_duplicate"
            " AND state IN ('queued', 'sending')",
            "SELECT priority, count(*) FROM messages WHERE state = 'sending' GROUP BY priority",
        ):
            plan = await (await conn.execute(("EXPLAIN " + sql).encode())).fetchall()
            text = "\n".join(str(line[0]) for line in plan)
            assert "Seq Scan" not in text, f"{sql}:\n{text}"
