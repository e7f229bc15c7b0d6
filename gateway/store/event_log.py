"""Reads of `message_events` by position (`seq`, commit order), not by message.

`seq` grows with time, so the first event at or after a time is found by a binary
search on the rowid (a few lookups, not a scan), and a reader that keeps the last
seq it saw reads only what was committed since (the dashboard's tail, a modem bank's
usage at start). A message's own history is `records.py` (`Records.events`).
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.store.reads import ReadPool


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    seq: int
    at: float
    state: str
    route: str | None
    error_code: str | None


class EventLog:
    def __init__(self, reader: ReadPool) -> None:
        self._reader = reader

    async def last_seq(self) -> int:
        row = await self._reader.one("SELECT max(seq) FROM message_events")
        return int(row[0]) if row and row[0] is not None else 0

    async def first_seq_since(self, since: float) -> int:
        """The seq of the first event at or after `since` (last seq + 1 if none)."""
        lo, hi = 1, await self.last_seq() + 1
        while lo < hi:
            mid = (lo + hi) // 2
            row = await self._reader.one(
                "SELECT at FROM message_events WHERE seq >= ? ORDER BY seq LIMIT 1", (mid,)
            )
            if row is None or row[0] >= since:
                hi = mid
            else:
                lo = mid + 1
        return lo

    async def after(self, seq: int, limit: int) -> list[LoggedEvent]:
        """Up to `limit` events with a seq above `seq`, oldest first."""
        rows = await self._reader.all(
            "SELECT seq, at, state, route, error_code FROM message_events"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [LoggedEvent(int(r[0]), float(r[1]), str(r[2]), r[3], r[4]) for r in rows]

    async def sent_since(self, route: str, since: float) -> list[tuple[float, str]]:
        """(time, carrier ids joined by commas) of every `sent` on `route` since `since`;
        reads only the events from `since` on (found by seq), not the whole history."""
        first = await self.first_seq_since(since)
        rows = await self._reader.all(
            "SELECT at, carrier_id FROM message_events WHERE seq >= ?"
            " AND state = 'sent' AND route = ? AND at >= ? AND carrier_id IS NOT NULL",
            (first, route, since),
        )
        return [(float(r[0]), str(r[1])) for r in rows]
