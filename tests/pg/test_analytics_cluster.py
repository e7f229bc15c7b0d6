"""Issue 18: the analytics' daily sums in PostgreSQL (`gateway/cluster/analytics.py`).

A day is recomputed from the shared tables when a statement inserted rows for it; a
row whose transaction commits after a round began is counted by the next round (a
`bigserial` cursor would have skipped it); one node runs a round at a time; a
backlog is worked off a few days a round; each source is read through its time index.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from drivers.clock import FakeClock
from gateway.cluster import analytics
from gateway.cluster.analytics import QUERIES, ROUND_DAYS, ClusterFigures, ClusterRollup
from gateway.cluster.lease import Pool
from tests.pg.queue_rows import rows

UTC_ZONE = ZoneInfo("UTC")
DAY = 86400.0
T0 = datetime(2027, 3, 1, tzinfo=UTC).timestamp()  # 2027-03-01 00:00 UTC

_MESSAGE = (
    "INSERT INTO messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
    " encoding, segments, route, created_at, updated_at, due_at, expires_at, purpose)"
    " VALUES (%s, 2, 'delivered', '', '\\x01', '\\x02', '\\x03', 'gsm7', 1, 'main',"
    " %s, %s, 0, 0, 'informational')"
)
_EVENT = "INSERT INTO message_events (message_id, at, state, route) VALUES (%s, %s, %s, 'main')"


def rollup(pool: Pool, clock: FakeClock | None = None) -> ClusterRollup:
    return ClusterRollup(pool, clock or FakeClock(), UTC_ZONE, 15.0)


async def sent_on(pool: Pool, first: str, last: str) -> int:
    figures = ClusterFigures(pool, rollup(pool))
    return (await figures.by_key("total", first, last)).get("", {}).get("sent", 0)


async def test_a_row_committed_after_a_round_began_is_counted_by_the_next(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute(_MESSAGE, ("m-1", T0 + 60, T0 + 60))
        await conn.execute(_EVENT, ("m-1", T0 + 61, "sent"))
    # A late transaction (a journal replayed, say) for the same day, still open:
    async with pool.connection() as late:
        await late.execute("BEGIN")
        await late.execute(_MESSAGE, ("m-2", T0 + 120, T0 + 120))
        await late.execute(_EVENT, ("m-2", T0 + 121, "sent"))
        assert await rollup(pool).round() == 1
        assert await sent_on(pool, "2027-03-01", "2027-03-01") == 1
        await late.execute("COMMIT")
    assert await rollup(pool).catch_up() == 1  # the late one's mark, now visible
    assert await sent_on(pool, "2027-03-01", "2027-03-01") == 2
    assert await rollup(pool).round() == 0
    assert await rows(pool, "SELECT count(*) FROM analytics_dirty") == [(0,)]


async def test_one_node_runs_a_round_at_a_time(pool: Pool) -> None:
    async with pool.connection() as conn:
        await conn.execute(_MESSAGE, ("m-1", T0, T0))
        await conn.execute(_EVENT, ("m-1", T0 + 1, "sent"))
    async with pool.connection() as holder, holder.transaction():
        await holder.execute("SELECT pg_advisory_xact_lock(%s)", (analytics.ROUND_LOCK,))
        assert await rollup(pool).round() is None  # another node's round runs
    assert await rollup(pool).round() == 1


async def test_a_backlog_is_worked_off_newest_days_first_a_few_a_round(pool: Pool) -> None:
    async with pool.connection() as conn:
        for d in range(ROUND_DAYS + 3):
            await conn.execute(_MESSAGE, (f"m-{d}", T0 + d * DAY, T0 + d * DAY))
        # One statement for every day (as a migration's copy): one mark for the span.
        await conn.execute(
            "INSERT INTO message_events (message_id, at, state)"
            " SELECT 'm-' || d, %s + d * 86400 + 5, 'sent' FROM generate_series(0, %s) d",
            (T0, ROUND_DAYS + 2),
        )
    last = f"2027-03-{ROUND_DAYS + 3:02d}"
    assert await rollup(pool).round() == ROUND_DAYS
    assert await sent_on(pool, "2027-03-01", last) == ROUND_DAYS  # the newest first
    assert await rollup(pool).catch_up() == 3
    assert await sent_on(pool, "2027-03-01", last) == ROUND_DAYS + 3
    assert await sent_on(pool, "2027-03-02", "2027-03-02") == 1


async def test_each_source_of_a_day_is_read_through_its_time_index(pool: Pool) -> None:
    """Two years of rows: a day's recompute enters every source by its index on the
    time column, never a whole table; a year's report reads its days' sums only."""
    async with pool.connection() as conn:
        n = 5_000
        step = 2 * 365 * DAY / n
        await conn.execute(
            "INSERT INTO messages (id, priority, state, route_group, to_ct, to_index, body_ct,"
            " encoding, segments, created_at, updated_at, due_at, expires_at, error_code)"
            " SELECT 'm-' || i, 2, CASE WHEN i %% 20 = 0 THEN 'blocked' ELSE 'sent' END, '',"
            " '\\x01', int4send(i %% 5000), '\\x03', 'gsm7', 1, %s + i * %s, %s + i * %s, 0, 0,"
            " 'opted_out' FROM generate_series(1, %s) i",
            (T0, step, T0, step, n),
        )
        await conn.execute(
            "INSERT INTO message_events (message_id, at, state)"
            " SELECT 'm-' || i, %s + i * %s + s.o, s.st FROM generate_series(1, %s) i,"
            " (VALUES ('queued', 0), ('sent', 1), ('delivered', 5)) s(st, o)",
            (T0, step, n),
        )
        await conn.execute(
            "INSERT INTO link_clicks (link_id, message_id, at, human, agent_class)"
            " SELECT 'l', 'm-' || i, %s + i * %s + 30, i %% 2, 'human'"
            " FROM generate_series(1, %s) i",
            (T0, step, n),
        )
        await conn.execute("ANALYZE messages, message_events, link_clicks")
        day = analytics.params(UTC_ZONE, "2027-06-01", "2027-06-01")
        for name, sql in QUERIES.items():
            plan = await (await conn.execute(("EXPLAIN " + sql).encode(), day)).fetchall()
            text = "\n".join(str(line[0]) for line in plan)
            assert "Seq Scan on message_events" not in text, f"{name}:\n{text}"
            assert "Seq Scan on messages" not in text, f"{name}:\n{text}"
            assert "Seq Scan on link_clicks" not in text, f"{name}:\n{text}"
        for name, index in (
            ("events", "message_events_outcome_at"),
            ("blocked", "messages_blocked_at"),
            ("clicks", "link_clicks_human_at"),
        ):
            plan = await (await conn.execute(("EXPLAIN " + QUERIES[name]).encode(), day)).fetchall()
            assert index in "\n".join(str(line[0]) for line in plan), name
        await conn.execute(  # three years of sums: 5 keys, 8 metrics a day
            "INSERT INTO analytics_sums (dim, day, key, metric, value)"
            " SELECT k.dim, to_char(date '2026-01-01' + d, 'YYYY-MM-DD'), k.key, 'm' || m, 1"
            " FROM generate_series(0, 1095) d, generate_series(1, 8) m,"
            " (VALUES ('total', ''), ('purpose', 'a'), ('purpose', 'b'),"
            "  ('route', 'x'), ('route', 'y')) k(dim, key)"
        )
        await conn.execute("ANALYZE analytics_sums")
        read = analytics._BY_KEY.replace("%s", "'total'", 1).replace("%s", "'2027-01-01'", 1)
        read = "EXPLAIN " + read.replace("%s", "'2027-12-31'", 1)
        text = "\n".join(str(r[0]) for r in await (await conn.execute(read.encode())).fetchall())
        assert "Seq Scan" not in text and "Index" in text, text


async def test_two_rounds_at_once_count_each_row_once(pool: Pool) -> None:
    async with pool.connection() as conn:
        for i in range(5):
            await conn.execute(_MESSAGE, (f"m-{i}", T0 + i, T0 + i))
            await conn.execute(_EVENT, (f"m-{i}", T0 + i + 1, "sent"))
    done = await asyncio.gather(rollup(pool).catch_up(), rollup(pool).catch_up())
    assert sum(done) >= 1
    assert await rollup(pool).catch_up() == 0
    assert await sent_on(pool, "2027-03-01", "2027-03-01") == 5


async def test_a_quarter_is_recomputed_alone_and_an_old_day_whole(pool: Pool) -> None:
    """Today's round reads the quarter hours marked, not the day; quarters older than
    `KEEP_QUARTERS_DAYS` are dropped, so a late row for such a day recomputes it whole."""
    async with pool.connection() as conn:
        for i, at in enumerate((T0 + 60, T0 + 3 * 3600, T0 + 20 * 3600)):
            await conn.execute(_MESSAGE, (f"m-{i}", at, at))
            await conn.execute(_EVENT, (f"m-{i}", at + 1, "sent"))
    assert await rollup(pool).round() == 1
    assert await rows(pool, "SELECT count(DISTINCT q) FROM analytics_quarters") == [(3,)]
    async with pool.connection() as conn:  # a late one, in another quarter of the day
        await conn.execute(_MESSAGE, ("m-late", T0 + 7200, T0 + 7200))
        await conn.execute(_EVENT, ("m-late", T0 + 7201, "sent"))
    assert await rows(pool, "SELECT lo, hi FROM analytics_dirty") == [(T0 + 7201, T0 + 7201)]
    assert await rollup(pool).round() == 1  # that quarter, then the day from its quarters
    assert await sent_on(pool, "2027-03-01", "2027-03-01") == 4

    later = FakeClock(T0 + (analytics.KEEP_QUARTERS_DAYS + 2) * DAY)
    async with pool.connection() as conn:
        await conn.execute(_EVENT, ("m-0", T0 + 30, "failed"))  # touches the day again
    assert await rollup(pool, later).round() == 1
    assert await rows(pool, "SELECT count(*) FROM analytics_quarters") == [(0,)]  # dropped
    async with pool.connection() as conn:
        await conn.execute(_MESSAGE, ("m-older", T0 + 9000, T0 + 9000))
        await conn.execute(_EVENT, ("m-older", T0 + 9001, "sent"))
    assert await rollup(pool, later).round() == 1  # recomputed whole, not from one quarter
    assert await sent_on(pool, "2027-03-01", "2027-03-01") == 5
