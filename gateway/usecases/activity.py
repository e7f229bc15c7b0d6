"""The gateway's activity as a stream of state changes, for the panel's live dashboard.

A position is an event's place in commit order (`message_events.seq`): `after(p)`
answers the changes committed after `p`, oldest first, so a reader that keeps the last
position it saw reads each change once. A message's creation is not one of them, even
held or blocked at accept (its row implies it; only the dashboard reads this, for
sent, delivered, failed and expired). What comes back carries no personal field (no
message id, number, body or carrier id): a state, a route name, an error code and a
time, which every panel role may see, so there is nothing to mask per caller.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.store.message_reads import ActivityLog
from gateway.store.store import Store


@dataclass(frozen=True, slots=True)
class ActivityEvent:
    position: int
    at: float
    state: str
    route: str | None
    error_code: str | None


class Activity:
    def __init__(self, *, store: Store, log: ActivityLog | None = None) -> None:
        # On a cluster: the shared queue's events (`cluster/reads.py`).
        self._log: ActivityLog = log if log is not None else store.event_log

    async def position_before(self, since: float) -> int:
        """The position to read from to get every change at or after `since`."""
        return await self._log.first_seq_since(since) - 1

    async def after(self, position: int, limit: int) -> list[ActivityEvent]:
        """Up to `limit` changes committed after `position`, oldest first."""
        return [
            ActivityEvent(e.seq, e.at, e.state, e.route, e.error_code)
            for e in await self._log.after(position, limit)
        ]
