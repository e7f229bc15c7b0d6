"""Sums over a range of days, read from the daily sums only (never the messages), so a
year opens as fast as a week: one indexed range of `analytics_daily` per question."""

from __future__ import annotations

from collections import defaultdict

from gateway.store.reads import ReadPool

Metrics = dict[str, int]

_BY_KEY = (
    "SELECT key, metric, sum(value) FROM analytics_daily"
    " WHERE dim = ? AND day BETWEEN ? AND ? GROUP BY key, metric"
)
_BY_DAY = (
    "SELECT day, metric, sum(value) FROM analytics_daily"
    " WHERE dim = ? AND day BETWEEN ? AND ? AND key = ? GROUP BY day, metric"
)


async def by_key(reader: ReadPool, dim: str, first: str, last: str) -> dict[str, Metrics]:
    """Each key of `dim` with its metrics summed over the days `first`..`last`."""
    out: dict[str, Metrics] = defaultdict(dict)
    for key, metric, value in await reader.all(_BY_KEY, (dim, first, last)):
        out[str(key)][str(metric)] = int(value)
    return dict(out)


async def by_day(reader: ReadPool, dim: str, key: str, first: str, last: str) -> dict[str, Metrics]:
    """One key's metrics per day over `first`..`last` (days with nothing left out)."""
    out: dict[str, Metrics] = defaultdict(dict)
    for day, metric, value in await reader.all(_BY_DAY, (dim, first, last, key)):
        out[str(day)][str(metric)] = int(value)
    return dict(out)
