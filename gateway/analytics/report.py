"""Sums over a range of days, read from the daily sums only (never the messages), so a
year opens as fast as a week: one indexed range of `analytics_daily` (a row per key and
day, a column per metric) and of `analytics_blocked` per question."""

from __future__ import annotations

from collections import defaultdict

from gateway.analytics.figures import BLOCKED, COLUMNS
from gateway.store.reads import ReadPool

Metrics = dict[str, int]

_SUMS = ", ".join(f"sum({c})" for c in COLUMNS)
_BY_KEY = (
    f"SELECT key, {_SUMS} FROM analytics_daily"  # noqa: S608 - fixed column names
    " WHERE dim = ? AND day BETWEEN ? AND ? GROUP BY key"
)
_BLOCKED_BY_KEY = (
    "SELECT key, reason, sum(value) FROM analytics_blocked"
    " WHERE dim = ? AND day BETWEEN ? AND ? GROUP BY key, reason"
)
_BY_DAY = (
    f"SELECT day, {_SUMS} FROM analytics_daily"  # noqa: S608 - fixed column names
    " WHERE dim = ? AND day BETWEEN ? AND ? AND key = ? GROUP BY day"
)
_BLOCKED_BY_DAY = (
    "SELECT day, reason, sum(value) FROM analytics_blocked"
    " WHERE dim = ? AND day BETWEEN ? AND ? AND key = ? GROUP BY day, reason"
)


async def _read(
    reader: ReadPool, wide: str, blocked: str, args: tuple[str, ...]
) -> dict[str, Metrics]:
    out: dict[str, Metrics] = defaultdict(dict)
    for row in await reader.all(wide, args):
        out[str(row[0])].update(zip(COLUMNS, (int(v or 0) for v in row[1:]), strict=True))
    for group, reason, value in await reader.all(blocked, args):
        out[str(group)][BLOCKED + str(reason)] = int(value)
    return dict(out)


async def by_key(reader: ReadPool, dim: str, first: str, last: str) -> dict[str, Metrics]:
    """Each key of `dim` with its metrics summed over the days `first`..`last`."""
    return await _read(reader, _BY_KEY, _BLOCKED_BY_KEY, (dim, first, last))


async def by_day(reader: ReadPool, dim: str, key: str, first: str, last: str) -> dict[str, Metrics]:
    """One key's metrics per day over `first`..`last` (days with nothing left out)."""
    return await _read(reader, _BY_DAY, _BLOCKED_BY_DAY, (dim, first, last, key))


# Names staff gave (not PHI) for the keys that are ids: a campaign, a reminder rule
# (its newest version's name). A variant key `<campaign>/<variant>` takes its campaign's.
_NAMES = {
    "campaign": "SELECT id, name FROM campaigns",
    "rule": "SELECT id, name FROM reminder_rules r"
    " WHERE version = (SELECT max(version) FROM reminder_rules WHERE id = r.id)",
}


async def names(reader: ReadPool, dim: str, keys: list[str]) -> dict[str, str]:
    """The display name of each of `keys` of `dim` that has one."""
    table = "campaign" if dim == "template" else dim
    if table not in _NAMES or not keys:
        return {}
    known = {str(k): str(n) for k, n in await reader.all(_NAMES[table], ())}
    if dim != "template":
        return {k: known[k] for k in keys if k in known}
    found = {}
    for key in keys:
        owner, _, variant = key.rpartition("/")
        if owner in known:
            found[key] = f"{known[owner]} / {variant}"
    return found
