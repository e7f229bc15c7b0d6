"""Where a claim by query starts reading `messages_claim`: a floor per (group, class).

Why. A claim by query (`claims.claim`) takes the first due rows of a group in class, due
time and id order, an ordered range of the partial index `messages_claim`. Each claim
turns rows `queued` -> `sending`; their old versions keep their index entries until
VACUUM removes them, and it removes nothing while a transaction holds the xmin horizon
(S9), so a claim from the start of the range walks every row claimed since, a heap
visit each. The floor is where this node last found due rows: the claim reads only
entries at or after `floor - SLACK`, a small range whatever the horizon.

How it moves. After a committed claim, a class's floor goes to the smallest due time it
took (rows before it were dead, locked by another claimer, or not visible yet); a claim
that found nothing puts it at `now`. SLACK covers clocks of nodes a little apart and
commits landing a little late. A row below a floor (a recovery's or an adoption's
requeue keeps its old due time; a claimer that rolled back; a peer whose clock lags; a
`send_at` in the past) is found by the sweep: at most every SWEEP_EVERY seconds, a
non-locking `min(due_at)` per class below the floor, which lowers the floor to it. Such a
row waits at most SWEEP_EVERY plus the claimer's poll interval; `lower` puts the floor
under a row this node itself wrote at once.
"""

from __future__ import annotations

import math

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from gateway.models import Priority, State

SLACK = 2.0  # seconds read below a floor: clock skew between nodes, late commits
SWEEP_EVERY = 2.0  # seconds between sweeps for due rows below the floors

# The smallest due time of a queued row of the class below `bound` (index-only; the
# walk over dead entries is paid here, every few seconds, not by every claim).
_BELOW = f"""
SELECT min(due_at) FROM messages
WHERE state = '{State.QUEUED.value}' AND route_group = %(group)s AND priority = %(prio)s
    AND due_at < %(bound)s
"""  # noqa: S608 - a fixed state name


class ClaimFloors:
    """This node's floors, per route group and class (none yet: from the start)."""

    def __init__(self) -> None:
        self._at: dict[tuple[str, Priority], float] = {}

    def bound(self, group: str, prio: Priority) -> float:
        """The smallest due time a claim of the class reads."""
        return self._at.get((group, prio), -math.inf) - SLACK

    def after_claim(self, group: str, prio: Priority, taken: list[float], now: float) -> None:
        """A committed claim of the class took rows due at `taken` (none: nothing due)."""
        self._at[(group, prio)] = min(taken) if taken else now

    def lower(self, group: str, prio: Priority, due_at: float) -> None:
        """A row of the class is queued at `due_at`: the next claim reads from it."""
        key = (group, prio)
        if key in self._at:
            self._at[key] = min(self._at[key], due_at)

    async def sweep(self, conn: AsyncConnection[TupleRow], group: str) -> int:
        """Lower each of the group's floors to a queued row found below it; how many were
        lowered."""
        lowered = 0
        for prio in Priority:
            bound = self.bound(group, prio)
            if bound == -math.inf:
                continue
            params = {"group": group, "prio": int(prio), "bound": bound}
            row = await (await conn.execute(_BELOW, params)).fetchone()
            if row is not None and row[0] is not None:
                self.lower(group, prio, float(row[0]))
                lowered += 1
        return lowered
