"""Analytics on a cluster: daily sums kept in PostgreSQL, recomputed by quarter hours.

Theory of operation. On one node the rollup (`gateway/analytics/rollup.py`) folds rows
into daily sums after a cursor that follows commit order: one SQLite writer numbers
them as they commit. On PostgreSQL a `bigserial` is taken before its transaction
commits, so rows of several nodes commit out of their numbers' order and a cursor
would skip the late ones (the outbox needs `xid8` ordering for this,
`outbox_store.py`). So the sums are not folded row by row but **recomputed a quarter
hour at a time** from the shared `message_events`, `messages` (blocked), `inbound`,
`consent_ledger` and `link_clicks`, each read through an index on its time column
(cluster migration 19) into `analytics_quarters` (UTC quarter hours: every zone's local
days are whole quarters), and each local day touched is summed again from its quarters
into `analytics_sums`: a quarter's sums are always what an aggregate over its rows says.

Which quarters: statement-level triggers on those tables append the time span of what
each statement inserted to `analytics_dirty` (one row a statement, never an update:
nothing on the send path waits on another writer). A round takes the marks visible in
its snapshot, recomputes their quarters in that same REPEATABLE READ snapshot and sums
their days again, in one transaction; a mark committed after the snapshot stays for
the next round, so a row committed late (an outcome journal replayed after an outage
keeps its answer's time) is counted then. A round's work is the rows of the quarters
marked since the last one (a busy day's quarter hour, not its whole day). One node at
a time runs a round (a transaction-level advisory lock; the others skip it), every
`[analytics] interval` seconds, at most `ROUND_DAYS` days of quarters a round, newest
first (a backlog, such as the first start after this migration marks every day already
there, is worked off over the following rounds). Quarters older than
`KEEP_QUARTERS_DAYS` are dropped; a day that old touched again is recomputed whole.

Reads (`ClusterFigures`) sum `analytics_sums` over the days asked, as SQLite's reports
read `analytics_daily`: a year opens as fast as a week. The figures are those of
`streams.py` with what a cluster keeps: replies count as `replied_confirm`,
`replied_cancel` or `replied_other` by their shared appointment reply (filed after
the inbound: its insert marks the quarter again, cluster migration 22), a message's
clinic is its contact's (no appointment's location), and the appointment, no-show and
rule figures are empty (appointments and reminders are not on the cluster backend yet).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from drivers.clock import Clock
from gateway.analytics.days import LocalDays, day_range
from gateway.analytics.figures import BLOCKED, LATENCY_EDGES, OVER
from gateway.analytics.streams import REPLY_WINDOW, TOTAL_ONLY, MessageKeys
from gateway.cluster.lease import Pool
from gateway.logs import exception_summary

log = structlog.get_logger("smsgw.cluster.analytics")

ROUND_LOCK = 0x736D7367_77000005  # pg_try_advisory_xact_lock key: "smsgw" + 5
QUARTER = 900
ROUND_DAYS = 2  # a round recomputes at most this many days' quarters (a short transaction)
KEEP_QUARTERS_DAYS = 35  # older quarters are dropped (their days' sums stay)

Metrics = dict[str, int]

# The UTC quarter hour of an instant: every zone's local days are whole quarters.
_DAY = "floor({at} / 900)::bigint"
_BUCKET = (
    "CASE "
    + " ".join(f"WHEN {{lat}} <= {edge} THEN 'lat_{edge}'" for edge in LATENCY_EDGES)
    + f" ELSE '{OVER}' END"
)
# A message's keys as `MessageKeys` takes them; `known`: the message is there.
_KEYS = "m.id IS NOT NULL, m.campaign_id, m.variant, m.purpose, {route}, k.clinic"
# The contact's clinic (an attribute of the contact, as SQLite's key without an
# appointment's location: appointments are not shared yet).
_CONTACT = "LEFT JOIN contacts k ON k.idx = m.to_index"

EVENTS = f"""
SELECT {_DAY.format(at="e.at")}, {_KEYS.format(route="coalesce(e.route, m.route)")},
       e.state,
       CASE WHEN e.state = 'delivered' AND s.sent_at IS NOT NULL
            THEN {_BUCKET.format(lat="greatest(0, e.at - s.sent_at)")} END,
       count(*), sum(coalesce(m.segments, 1))
FROM message_events e
LEFT JOIN messages m ON m.id = e.message_id
{_CONTACT}
LEFT JOIN LATERAL (SELECT max(p.at) AS sent_at FROM message_events p
                   WHERE e.state = 'delivered' AND p.message_id = e.message_id
                     AND p.state = 'sent' AND p.seq < e.seq) s ON true
WHERE e.at >= %(lo)s AND e.at < %(hi)s
  AND e.state IN ('sent', 'delivered', 'failed', 'expired')
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9
"""  # noqa: S608 - fixed fragments

BLOCKED_MESSAGES = f"""
SELECT {_DAY.format(at="m.updated_at")}, {_KEYS.format(route="m.route")},
       coalesce(m.error_code, 'unknown'), count(*)
FROM messages m
{_CONTACT}
WHERE m.state = 'blocked' AND m.updated_at >= %(lo)s AND m.updated_at < %(hi)s
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
"""  # noqa: S608 - fixed fragments

# The last message sent to a blind index before an instant, within the reply window
# (as `streams._LAST_SENT`); an erased number's empty index matches nothing.
_LAST_SENT = """
(SELECT x.id FROM messages x WHERE x.to_index = {idx} AND {idx} <> '\\x'::bytea
   AND x.created_at < {at} AND x.created_at >= {at} - %(window)s
   AND coalesce(x.purpose, '') <> 'compliance'
   AND EXISTS (SELECT 1 FROM message_events s WHERE s.message_id = x.id
               AND s.state = 'sent' AND s.at < {at})
 ORDER BY x.created_at DESC, x.id DESC LIMIT 1)
"""

REPLIES = f"""
SELECT {_DAY.format(at="i.received_at")}, {_KEYS.format(route="m.route")},
       CASE WHEN r.intent IN ('confirm', 'cancel') THEN r.intent ELSE 'other' END, count(*)
FROM inbound i
JOIN messages m ON m.id = {_LAST_SENT.format(idx="i.sender_index", at="i.received_at")}
{_CONTACT}
LEFT JOIN appointment_replies r ON r.inbound_id = i.id
WHERE i.received_at >= %(lo)s AND i.received_at < %(hi)s
  AND NOT EXISTS (SELECT 1 FROM consent_ledger l WHERE l.contact_idx = i.sender_index
                  AND l.inbound_id = i.id)
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
"""  # noqa: S608 - fixed fragments

# Once per decision, however many scopes it recorded (as `streams.CONSENT_SQL`).
OPT_OUTS = f"""
SELECT {_DAY.format(at="l.at")}, {_KEYS.format(route="m.route")}, count(*)
FROM consent_ledger l
LEFT JOIN messages m ON m.id = coalesce(
    l.message_id, {_LAST_SENT.format(idx="l.contact_idx", at="l.at")})
{_CONTACT}
WHERE l.at >= %(lo)s AND l.at < %(hi)s AND l.decision = 'opt_out'
  AND (l.message_id IS NOT NULL OR l.inbound_id IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM consent_ledger p WHERE p.contact_idx = l.contact_idx
                  AND p.seq < l.seq AND p.decision = 'opt_out'
                  AND (p.inbound_id = l.inbound_id
                       OR (l.inbound_id IS NULL AND p.inbound_id IS NULL AND p.at = l.at
                           AND p.message_id IS NOT DISTINCT FROM l.message_id)))
GROUP BY 1, 2, 3, 4, 5, 6, 7
"""  # noqa: S608 - fixed fragments

CLICKS = f"""
SELECT {_DAY.format(at="c.at")}, {_KEYS.format(route="m.route")}, count(*),
       count(*) FILTER (WHERE NOT EXISTS (
           SELECT 1 FROM link_clicks p WHERE p.message_id = c.message_id
           AND p.human = 1 AND p.seq < c.seq))
FROM link_clicks c
LEFT JOIN messages m ON m.id = c.message_id
{_CONTACT}
WHERE c.at >= %(lo)s AND c.at < %(hi)s AND c.human = 1 AND c.message_id IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6, 7
"""  # noqa: S608 - fixed fragments

QUERIES = {
    "events": EVENTS,
    "blocked": BLOCKED_MESSAGES,
    "replies": REPLIES,
    "opt_outs": OPT_OUTS,
    "clicks": CLICKS,
}

# (quarter, [(dimension, key), ...], metric, count)
Fact = tuple[int, list[tuple[str, str]], str, int]


def _keys(row: Sequence[Any]) -> list[tuple[str, str]]:
    """The (dimension, key) pairs of a row's message columns (`_KEYS`, from row[1])."""
    known, campaign, variant, purpose, route, clinic = row[1:7]
    if not known:
        return TOTAL_ONLY
    owner = f"{campaign}/{variant}" if campaign and variant else None
    return MessageKeys(campaign, owner, None, clinic, purpose, route, 1).keys()


def _facts_of(name: str, rows: Sequence[Sequence[Any]]) -> list[Fact]:
    out: list[Fact] = []
    for row in rows:
        day, keys = int(row[0]), _keys(row)
        if name == "events":
            state, bucket, n, parts = row[7], row[8], int(row[9]), int(row[10] or 0)
            out.append((day, keys, state, n))
            if state == "sent":
                out.append((day, keys, "parts", parts))
            if bucket is not None:
                out.append((day, keys, str(bucket), n))
        elif name == "blocked":
            out.append((day, keys, BLOCKED + str(row[7]), int(row[8])))
        elif name == "replies":
            out.append((day, keys, f"replied_{row[7]}", int(row[8])))
        elif name == "opt_outs":
            out.append((day, keys, "opted_out", int(row[7])))
        else:  # clicks
            out.append((day, keys, "clicks", int(row[7])))
            out.append((day, keys, "clicked", int(row[8])))
    return out


def bounds(zone: ZoneInfo, first: str, last: str) -> tuple[float, float]:
    """The instants from the start of local day `first` to the end of `last`."""
    start = datetime.combine(date.fromisoformat(first), time(0), zone)
    end = datetime.combine(date.fromisoformat(last) + timedelta(days=1), time(0), zone)
    return start.timestamp(), end.timestamp()


def params(zone: ZoneInfo, first: str, last: str) -> dict[str, Any]:
    """The parameters of `QUERIES` for the local days `first`..`last`."""
    lo, hi = bounds(zone, first, last)
    return {"lo": lo, "hi": hi, "window": REPLY_WINDOW}


def _runs(quarters: list[int]) -> list[tuple[int, int]]:
    """Sorted quarters as runs of consecutive ones: (first, last) each."""
    runs: list[tuple[int, int]] = []
    for q in quarters:
        if runs and q == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], q)
        else:
            runs.append((q, q))
    return runs


Conn = AsyncConnection[TupleRow]


async def recompute_quarters(conn: Conn, quarters: list[int]) -> None:
    """Replace the sums of `quarters` (sorted) by what their rows say now, in the
    caller's transaction."""
    for first, last in _runs(quarters):
        sums: Counter[tuple[int, str, str, str]] = Counter()
        span = {"lo": first * QUARTER, "hi": (last + 1) * QUARTER, "window": REPLY_WINDOW}
        for name, sql in QUERIES.items():
            cur = await conn.execute(sql.encode(), span)
            for q, keys, metric, n in _facts_of(name, await cur.fetchall()):
                for dim, key in keys:
                    sums[(q, dim, key, metric)] += n
        await conn.execute(
            "DELETE FROM analytics_quarters WHERE q BETWEEN %s AND %s", (first, last)
        )
        rows = [(*k, n) for k, n in sums.items() if n]
        if rows:
            await conn.cursor().executemany(
                "INSERT INTO analytics_quarters (q, dim, key, metric, value)"
                " VALUES (%s, %s, %s, %s, %s)",
                rows,
            )


async def resum_days(conn: Conn, zone: ZoneInfo, days: list[str]) -> None:
    """Each of `days` (local) as the sum of its quarters, in the caller's transaction."""
    for day in days:
        lo, hi = bounds(zone, day, day)
        await conn.execute("DELETE FROM analytics_sums WHERE day = %s", (day,))
        await conn.execute(
            "INSERT INTO analytics_sums (dim, day, key, metric, value)"
            " SELECT dim, %s, key, metric, sum(value) FROM analytics_quarters"
            " WHERE q >= %s AND q < %s GROUP BY dim, key, metric HAVING sum(value) <> 0",
            (day, int(lo // QUARTER), int(hi // QUARTER)),
        )


class ClusterRollup:
    """The rounds that keep `analytics_quarters` and `analytics_sums` (one node at a
    time)."""

    def __init__(self, pool: Pool, clock: Clock, zone: ZoneInfo, interval: float) -> None:
        self._pool = pool
        self._clock = clock
        self._days = LocalDays(zone)
        self.interval = interval
        self.backlog = False  # the last round left days for the next

    def _quarters_of(self, day: str) -> range:
        lo, hi = bounds(self._days.zone, day, day)
        return range(int(lo // QUARTER), int(hi // QUARTER))

    def _plan(self, marks: list[tuple[float, float]]) -> dict[str, set[int]]:
        """The quarters to recompute, by local day: those marked, or every quarter of
        a day whose quarters were dropped (older than `KEEP_QUARTERS_DAYS`). Walked by
        days, not quarters: a mark may span years (the migration's first marks)."""
        kept_from = self._days.day(self._clock.time() - KEEP_QUARTERS_DAYS * 86400.0)
        by_day: dict[str, set[int]] = defaultdict(set)
        for lo, hi in marks:
            first, last = self._days.day(lo), self._days.day(hi)
            q_lo, q_hi = int(lo // QUARTER), int(hi // QUARTER)
            for day in day_range(date.fromisoformat(first), date.fromisoformat(last)):
                whole = self._quarters_of(day)
                if day < kept_from:
                    by_day[day].update(whole)
                else:
                    by_day[day].update(range(max(whole.start, q_lo), min(whole.stop, q_hi + 1)))
        return by_day

    async def round(self) -> int | None:
        """Recompute the quarters marked dirty and their days' sums (the newest days
        first, at most `ROUND_DAYS` days of quarters); the days summed again, or None
        when another node runs a round now."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            got = await (
                await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (ROUND_LOCK,))
            ).fetchone()
            if got is None or not got[0]:
                return None
            cur = await conn.execute("DELETE FROM analytics_dirty RETURNING lo, hi")
            by_day = self._plan([(float(lo), float(hi)) for lo, hi in await cur.fetchall()])
            if not by_day:
                return 0
            days, budget = sorted(by_day, reverse=True), ROUND_DAYS * 96
            now: list[str] = []
            for day in days:
                if now and len(by_day[day]) > budget:
                    break
                now.append(day)
                budget -= len(by_day[day])
            later = [q for day in days[len(now) :] for q in by_day[day]]
            self.backlog = bool(later)
            if later:  # the oldest wait for the next rounds
                await conn.execute(
                    "INSERT INTO analytics_dirty (lo, hi) VALUES (%s, %s)",
                    (min(later) * QUARTER, max(later) * QUARTER),
                )
            await recompute_quarters(conn, sorted(q for day in now for q in by_day[day]))
            await resum_days(conn, self._days.zone, now)
            # A day past the horizon is recomputed whole; its quarters go a day later, so
            # a node whose clock is behind still finds them (it sums only those marked).
            dropped = self._days.day(self._clock.time() - (KEEP_QUARTERS_DAYS + 1) * 86400.0)
            await conn.execute(
                "DELETE FROM analytics_quarters WHERE q < %s", (self._quarters_of(dropped)[0],)
            )
            return len(now)

    async def catch_up(self) -> int:
        """Rounds until nothing is marked (or another node runs them); the days done."""
        total = 0
        while n := await self.round():
            total += n
        return total

    async def run(self) -> None:
        """A round every `interval` (at once again while a backlog lasts)."""
        while True:
            more = False
            try:
                n = await self.round()
                more = self.backlog
                if n:
                    log.info("analytics_days_counted", days=n)
            except Exception as e:  # the database is away: next round, not never
                log.error("analytics_round_failed", error=exception_summary(e))
            await self._clock.sleep(0.0 if more else self.interval)


# Sums over a range of days, as `gateway/analytics/report.py` reads SQLite's.
_BY_KEY = (
    "SELECT key, metric, sum(value) FROM analytics_sums"
    " WHERE dim = %s AND day BETWEEN %s AND %s GROUP BY key, metric"
)
_BY_DAY = (
    "SELECT day, metric, sum(value) FROM analytics_sums"
    " WHERE dim = %s AND day BETWEEN %s AND %s AND key = %s GROUP BY day, metric"
)


class ClusterFigures:
    """`gateway.analytics.usecase.FiguresSource` over the sums kept in PostgreSQL."""

    def __init__(self, pool: Pool, rollup: ClusterRollup) -> None:
        self._pool = pool
        self.rollup = rollup

    async def _read(self, sql: str, args: tuple[str, ...]) -> dict[str, Metrics]:
        out: dict[str, Metrics] = defaultdict(dict)
        async with self._pool.connection() as conn:
            for group, metric, value in await (await conn.execute(sql.encode(), args)).fetchall():
                out[str(group)][str(metric)] = int(value)
        return dict(out)

    async def by_key(self, dim: str, first: str, last: str) -> dict[str, Metrics]:
        return await self._read(_BY_KEY, (dim, first, last))

    async def by_day(self, dim: str, key: str, first: str, last: str) -> dict[str, Metrics]:
        return await self._read(_BY_DAY, (dim, first, last, key))

    async def names(self, dim: str, keys: list[str]) -> dict[str, str]:
        """No names yet: campaigns and reminder rules are not on the cluster backend."""
        del dim, keys
        return {}

    async def refresh(self) -> int:
        return await self.rollup.catch_up()

    async def run(self) -> None:
        await self.rollup.run()
