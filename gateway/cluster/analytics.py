"""Analytics on a cluster: the figures counted straight from the shared tables.

Theory of operation. On one node the rollup (`gateway/analytics/rollup.py`) folds rows
into daily sums after a cursor that follows commit order: one SQLite writer numbers
them as they commit. On PostgreSQL a `bigserial` is taken before its transaction
commits, so rows of several nodes commit out of their numbers' order and a cursor would
skip the late ones (the outbox needs `xid8` ordering for this, `outbox_store.py`); and
a rollup of closed days would miss what commits late for an old day (an outcome
journal replayed after an outage keeps its answer's time). So a cluster node answers
each report with aggregate queries over the shared `message_events`, `messages`
(blocked), `inbound`, `consent_ledger` and `link_clicks`, each entered through an index
on its time column for the report's range (cluster migration 16: see
`tests/pg/test_analytics_cluster.py`'s EXPLAIN): every node gives the same figures, a
commit is counted by the next read, and nothing is kept to drift. A report costs in
proportion to the rows of its range (about a second per few hundred thousand messages;
docs/ops/cluster.md); the front ends' concurrent questions over one range (the panel
page asks eight) share one computation.

The figures are those of `streams.py`, day by day in the site's time zone, with what a
cluster keeps: replies count as `replied_other` (the appointment replies that classify
confirm and cancel are not shared yet), and the appointment, no-show, rule and clinic
figures are empty (appointments and reminders are not on the cluster backend yet).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.analytics.figures import BLOCKED, LATENCY_EDGES, OVER
from gateway.analytics.streams import REPLY_WINDOW, TOTAL_ONLY, MessageKeys
from gateway.cluster.lease import Pool

Metrics = dict[str, int]

_DAY = "to_char(to_timestamp({at}) AT TIME ZONE %(tz)s, 'YYYY-MM-DD')"
_BUCKET = (
    "CASE "
    + " ".join(f"WHEN {{lat}} <= {edge} THEN 'lat_{edge}'" for edge in LATENCY_EDGES)
    + f" ELSE '{OVER}' END"
)
# A message's keys as `MessageKeys` takes them; `known`: the message is there.
_KEYS = "m.id IS NOT NULL, m.campaign_id, m.variant, m.purpose, {route}"

EVENTS = f"""
SELECT {_DAY.format(at="e.at")}, {_KEYS.format(route="coalesce(e.route, m.route)")},
       e.state,
       CASE WHEN e.state = 'delivered' AND s.sent_at IS NOT NULL
            THEN {_BUCKET.format(lat="greatest(0, e.at - s.sent_at)")} END,
       count(*), sum(coalesce(m.segments, 1))
FROM message_events e
LEFT JOIN messages m ON m.id = e.message_id
LEFT JOIN LATERAL (SELECT max(p.at) AS sent_at FROM message_events p
                   WHERE p.message_id = e.message_id AND p.state = 'sent'
                     AND p.seq < e.seq) s ON e.state = 'delivered'
WHERE e.at >= %(lo)s AND e.at < %(hi)s
  AND e.state IN ('sent', 'delivered', 'failed', 'expired')
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8
"""  # noqa: S608 - fixed fragments

BLOCKED_MESSAGES = f"""
SELECT {_DAY.format(at="m.updated_at")}, {_KEYS.format(route="m.route")},
       coalesce(m.error_code, 'unknown'), count(*)
FROM messages m
WHERE m.state = 'blocked' AND m.updated_at >= %(lo)s AND m.updated_at < %(hi)s
GROUP BY 1, 2, 3, 4, 5, 6, 7
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
SELECT {_DAY.format(at="i.received_at")}, {_KEYS.format(route="m.route")}, count(*)
FROM inbound i
JOIN messages m ON m.id = {_LAST_SENT.format(idx="i.sender_index", at="i.received_at")}
WHERE i.received_at >= %(lo)s AND i.received_at < %(hi)s
  AND NOT EXISTS (SELECT 1 FROM consent_ledger l WHERE l.contact_idx = i.sender_index
                  AND l.inbound_id = i.id)
GROUP BY 1, 2, 3, 4, 5, 6
"""  # noqa: S608 - fixed fragments

# Once per decision, however many scopes it recorded (as `streams.CONSENT_SQL`).
OPT_OUTS = f"""
SELECT {_DAY.format(at="l.at")}, {_KEYS.format(route="m.route")}, count(*)
FROM consent_ledger l
LEFT JOIN messages m ON m.id = coalesce(
    l.message_id, {_LAST_SENT.format(idx="l.contact_idx", at="l.at")})
WHERE l.at >= %(lo)s AND l.at < %(hi)s AND l.decision = 'opt_out'
  AND (l.message_id IS NOT NULL OR l.inbound_id IS NOT NULL)
  AND NOT EXISTS (SELECT 1 FROM consent_ledger p WHERE p.contact_idx = l.contact_idx
                  AND p.seq < l.seq AND p.decision = 'opt_out'
                  AND (p.inbound_id = l.inbound_id
                       OR (l.inbound_id IS NULL AND p.inbound_id IS NULL AND p.at = l.at
                           AND p.message_id IS NOT DISTINCT FROM l.message_id)))
GROUP BY 1, 2, 3, 4, 5, 6
"""  # noqa: S608 - fixed fragments

CLICKS = f"""
SELECT {_DAY.format(at="c.at")}, {_KEYS.format(route="m.route")}, count(*),
       count(*) FILTER (WHERE NOT EXISTS (
           SELECT 1 FROM link_clicks p WHERE p.message_id = c.message_id
           AND p.human = 1 AND p.seq < c.seq))
FROM link_clicks c
LEFT JOIN messages m ON m.id = c.message_id
WHERE c.at >= %(lo)s AND c.at < %(hi)s AND c.human = 1 AND c.message_id IS NOT NULL
GROUP BY 1, 2, 3, 4, 5, 6
"""  # noqa: S608 - fixed fragments

QUERIES = {
    "events": EVENTS,
    "blocked": BLOCKED_MESSAGES,
    "replies": REPLIES,
    "opt_outs": OPT_OUTS,
    "clicks": CLICKS,
}

# (day, [(dimension, key), ...], metric, count)
Fact = tuple[str, list[tuple[str, str]], str, int]


def _keys(row: Sequence[Any]) -> list[tuple[str, str]]:
    """The (dimension, key) pairs of a row's message columns (`_KEYS`, from row[1])."""
    known, campaign, variant, purpose, route = row[1:6]
    if not known:
        return TOTAL_ONLY
    owner = f"{campaign}/{variant}" if campaign and variant else None
    return MessageKeys(campaign, owner, None, None, purpose, route, 1).keys()


def _facts_of(name: str, rows: Sequence[Sequence[Any]]) -> list[Fact]:
    out: list[Fact] = []
    for row in rows:
        day, keys = str(row[0]), _keys(row)
        if name == "events":
            state, bucket, n, parts = row[6], row[7], int(row[8]), int(row[9] or 0)
            out.append((day, keys, state, n))
            if state == "sent":
                out.append((day, keys, "parts", parts))
            if bucket is not None:
                out.append((day, keys, str(bucket), n))
        elif name == "blocked":
            out.append((day, keys, BLOCKED + str(row[6]), int(row[7])))
        elif name == "replies":
            out.append((day, keys, "replied_other", int(row[6])))
        elif name == "opt_outs":
            out.append((day, keys, "opted_out", int(row[6])))
        else:  # clicks
            out.append((day, keys, "clicks", int(row[6])))
            out.append((day, keys, "clicked", int(row[7])))
    return out


def bounds(zone: ZoneInfo, first: str, last: str) -> tuple[float, float]:
    """The instants from the start of local day `first` to the end of `last`."""
    start = datetime.combine(date.fromisoformat(first), time(0), zone)
    end = datetime.combine(date.fromisoformat(last) + timedelta(days=1), time(0), zone)
    return start.timestamp(), end.timestamp()


class ClusterFigures:
    """`gateway.analytics.usecase.FiguresSource` over the shared PostgreSQL tables."""

    live = True  # counted at each read: nothing to refresh

    def __init__(self, pool: Pool, zone: ZoneInfo) -> None:
        self._pool = pool
        self._zone = zone
        self._pending: dict[tuple[str, str], asyncio.Future[list[Fact]]] = {}

    def params(self, first: str, last: str) -> dict[str, Any]:
        lo, hi = bounds(self._zone, first, last)
        return {"tz": self._zone.key, "lo": lo, "hi": hi, "window": REPLY_WINDOW}

    async def _facts(self, first: str, last: str) -> list[Fact]:
        """Every fact of the range: one computation shared by the questions asked
        meanwhile (a question asked after it ended computes again, and sees every
        commit before it)."""
        key = (first, last)
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._compute(first, last))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        return await asyncio.shield(pending)

    async def _compute(self, first: str, last: str) -> list[Fact]:
        params = self.params(first, last)
        facts: list[Fact] = []
        # One snapshot for every source: figures from one moment.
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            for name, sql in QUERIES.items():
                cur = await conn.execute(sql.encode(), params)
                facts += _facts_of(name, await cur.fetchall())
        return facts

    async def by_key(self, dim: str, first: str, last: str) -> dict[str, Metrics]:
        out: dict[str, Metrics] = defaultdict(lambda: defaultdict(int))
        for _, keys, metric, n in await self._facts(first, last):
            for d, k in keys:
                if d == dim:
                    out[k][metric] += n
        return {k: dict(v) for k, v in out.items()}

    async def by_day(self, dim: str, key: str, first: str, last: str) -> dict[str, Metrics]:
        out: dict[str, Metrics] = defaultdict(lambda: defaultdict(int))
        for day, keys, metric, n in await self._facts(first, last):
            if (dim, key) in keys:
                out[day][metric] += n
        return {d: dict(v) for d, v in out.items()}

    async def names(self, dim: str, keys: list[str]) -> dict[str, str]:
        """No names yet: campaigns and reminder rules are not on the cluster backend."""
        del dim, keys
        return {}
