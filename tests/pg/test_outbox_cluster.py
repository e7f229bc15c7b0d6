"""The shared outbox on PostgreSQL (issue 18): consumers see committed rows in a
gap-free order even when transactions commit out of their rows' insertion order, and
one node at a time leads a consumer's lane (a fenced or departed node gives it up); the
rows are those SQLite writes, of the types and states some node's consumers take."""

from __future__ import annotations

from pathlib import Path

import psycopg

from drivers.clock import SystemClock
from gateway.cluster.inbound import ClusterInbound
from gateway.cluster.lease import Pool
from gateway.cluster.outbox_lanes import LaneLocks
from gateway.cluster.outbox_store import INSERT_ROW, ClusterOutbox, consent_row, health_rows
from gateway.integrations.events import MESSAGE_INBOUND, MESSAGE_STATUS, ROUTE_HEALTH
from gateway.store.crypto import FieldCipher
from gateway.store.outbox_sql import DELIVERED, Attempt
from gateway.store.store import Store
from tests.pg.queue_rows import NOW, add_messages


def _repo(pool: Pool, dsn: str, local: Store, fenced: list[bool] | None = None) -> ClusterOutbox:
    flag = fenced if fenced is not None else [False]
    lanes = LaneLocks(dsn, SystemClock(), lambda: flag[0])
    return ClusterOutbox(pool, "gw1", SystemClock(), lanes, lambda b, r, c: "", local)


async def _row(conn: psycopg.AsyncConnection[tuple[object, ...]], message_id: str) -> int:
    await conn.execute(INSERT_ROW, (MESSAGE_STATUS, 1.0, message_id, "r", "sent", None, 1))
    cur = await conn.execute("SELECT max(ins) FROM outbox WHERE message_id = %s", (message_id,))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_row_committed_after_a_later_one_is_never_skipped(
    pool: Pool, pg_dsn: str, tmp_path: Path
) -> None:
    local = Store(tmp_path / "gw.db", b"k" * 32)
    await local.open()
    repo = _repo(pool, pg_dsn, local)
    async with (
        await psycopg.AsyncConnection.connect(pg_dsn) as early,
        await psycopg.AsyncConnection.connect(pg_dsn) as late,
    ):
        # `early` takes its transaction id first, `late` inserts first and stays open,
        # then `early` inserts (a larger insertion number) and commits first.
        await early.execute("SELECT pg_current_xact_id()")
        ins_late = await _row(late, "late")
        ins_early = await _row(early, "early")
        assert ins_late < ins_early
        await early.commit()

        rows, _ = await repo.after_with_attempts("rx", 0, 100)
        assert [r.message_id for r in rows] == ["early"]
        position = rows[-1].seq
        done = Attempt("rx", position, DELIVERED, 1, 1.0, 1.0, None, None)
        await repo.join(["rx"])
        await repo.record_delivered([done], position)

        await late.commit()
        rows, _ = await repo.after_with_attempts("rx", await repo.position("rx"), 100)
        assert [r.message_id for r in rows] == ["late"]  # seq above the one read before
        assert rows[0].seq == position + 1
    assert await repo.last_seq() == position + 1
    # Pruning drops what every consumer has passed, nothing beyond.
    assert await repo.prune(1000.0) == 1
    rows, _ = await repo.after_with_attempts("rx", 0, 100)
    assert [r.message_id for r in rows] == ["late"]
    await local.close()


async def test_one_node_leads_a_lane_and_a_fenced_or_departed_one_lets_go(
    pool: Pool, pg_dsn: str, tmp_path: Path
) -> None:
    fenced = [False]
    one = LaneLocks(pg_dsn, SystemClock(), lambda: fenced[0])
    two = LaneLocks(pg_dsn, SystemClock(), lambda: False)
    try:
        assert await one.lead("rx")
        assert not await two.lead("rx")
        assert await two.lead("mqtt")  # another consumer's lane is free
        fenced[0] = True
        assert not await one.lead("rx")  # fenced: gives every lane up
        assert await two.lead("rx")
        fenced[0] = False
        assert not await one.lead("rx")
        await two.close()  # a node that stops (or whose connection dies) lets go
        assert await one.lead("rx")
        assert await one.lead("mqtt")
    finally:
        await one.close()
        await two.close()


async def test_status_rows_are_those_sqlite_writes_of_the_wanted_types_and_states(
    pool: Pool, pg_dsn: str, tmp_path: Path
) -> None:
    local = Store(tmp_path / "gw.db", b"k" * 32)
    await local.open()
    repo = _repo(pool, pg_dsn, local)
    m0, m1 = await add_messages(pool, 2)
    created = NOW - 60  # add_messages' creation time

    async def event(message_id: str, at: float, state: str, *rest: object) -> None:
        route, code, attempt = rest if rest else (None, None, 0)
        async with pool.connection() as conn:
            await conn.execute(
                "INSERT INTO message_events (message_id, at, state, route, error_code, attempt)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (message_id, at, state, route, code, attempt),
            )

    await event(m0, NOW, "sending", "r", None, 1)  # no consumer anywhere: not written
    await repo.keep_only({MESSAGE_STATUS, ROUTE_HEALTH}, {"blocked", "sent"})
    await event(m0, created, "queued")  # a plain accept: implied by the row, as on SQLite
    await event(m1, created, "blocked", None, "consent:opted_out", 0)  # a judged accept
    await event(m0, NOW, "sending", "r", None, 1)  # a state no endpoint takes
    await event(m0, NOW, "sent", "r", None, 1)
    await event(m0, NOW, "receipt_overdue", "r", "gateway:receipt_overdue", 1)  # not a state
    async with pool.connection() as conn:
        await health_rows(conn, [("r", "down")], NOW)
        await consent_row(conn, "cl_1", NOW, "default", "all", "opt_out")  # nobody takes it
    rows, _ = await repo.after_with_attempts("rx", 0, 100)
    assert [(r.type, r.data()) for r in rows] == [
        (
            MESSAGE_STATUS,
            {
                "message_id": m1,
                "state": "blocked",
                "route": None,
                "error_code": "consent:opted_out",
                "attempts": 0,
            },
        ),
        (
            MESSAGE_STATUS,
            {"message_id": m0, "state": "sent", "route": "r", "error_code": None, "attempts": 1},
        ),
        (ROUTE_HEALTH, {"route": "r", "state": "down"}),
    ]
    assert [r.seq for r in rows] == [1, 2, 3]
    await local.close()


async def test_an_inbound_filed_on_a_node_writes_its_event_with_its_personal_fields(
    pool: Pool, pg_dsn: str, tmp_path: Path
) -> None:
    """`message.inbound` in the shared row's transaction; a `phi` endpoint's read
    opens the sender and text from the shared inbound."""
    local = Store(tmp_path / "gw.db", b"k" * 32)
    await local.open()
    shared = FieldCipher({1: bytes(range(32))}, bytes(range(32, 64)))
    lanes = LaneLocks(pg_dsn, SystemClock(), lambda: False)
    repo = ClusterOutbox(pool, "gw1", SystemClock(), lanes, shared.decrypt, local)
    files = ClusterInbound(pool, shared, local, "gw1")
    await files.insert_inbound("in-0", "r", "+15550100", "nobody wants it", None, None, NOW)
    await repo.keep_only({MESSAGE_INBOUND}, set())
    await files.insert_inbound("in-1", "r", "+15550101", "YES see you", "+15550199", None, NOW)
    rows, _ = await repo.after_with_attempts("rx", 0, 100)
    assert [(r.type, r.message_id, r.route) for r in rows] == [(MESSAGE_INBOUND, "in-1", "r")]
    assert await repo.phi_many(rows) == {
        rows[0].seq: {"from": "+15550101", "to": "+15550199", "text": "YES see you"}
    }
    await local.close()
