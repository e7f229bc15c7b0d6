"""Instants to the site's local calendar days (`YYYY-MM-DD`), across DST changes.

Every zone's offset, and every DST change, falls on a quarter hour, so an instant's
local day is that of the quarter hour it starts: one `zoneinfo` conversion per quarter
hour seen, cached, keeps a rollup of millions of rows cheap.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

QUARTER = 900


class LocalDays:
    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._cache: dict[int, str] = {}

    def day(self, at: float) -> str:
        """The local calendar day `at` falls on."""
        q = int(at // QUARTER)
        found = self._cache.get(q)
        if found is None:
            if len(self._cache) > 100_000:
                self._cache.clear()
            found = datetime.fromtimestamp(q * QUARTER, self.zone).date().isoformat()
            self._cache[q] = found
        return found

    def today(self, now: float) -> date:
        return datetime.fromtimestamp(now, self.zone).date()


def day_range(first: date, last: date) -> list[str]:
    """Every day from `first` to `last`, both included."""
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
