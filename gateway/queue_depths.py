"""How many messages the scheduler holds, per class and per the route each would try
first, queued (in `_waiting`, due or backing off) and scheduled (not yet due): counted
as entries come and go, so `/queue`, `/metrics` and the dashboard read them in
O(classes x route sets) instead of walking a hundred thousand entries per request.

Counted per (class, route set): two attributes an entry keeps while it is held (unlike
its `due_at`), read together in C. The scheduler calls
`enter` and `leave` wherever it puts an entry in, or takes one out of, `_waiting` or
`_scheduled`, so the counts equal a recount of those at every moment the event loop
lets a reader look (`tests/test_queue_depths.py` checks it after every step)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from operator import attrgetter
from typing import TYPE_CHECKING

from gateway.models import Priority

if TYPE_CHECKING:
    from gateway.scheduler_feed import Entry

Key = tuple[Priority, tuple[str, ...]]
_KEY = attrgetter("priority", "candidates")
KINDS = ("queued", "scheduled")


class QueueDepths:
    __slots__ = ("queued", "scheduled")

    def __init__(self) -> None:
        self.queued: Counter[Key] = Counter()
        self.scheduled: Counter[Key] = Counter()

    def enter(self, entry: Entry, scheduled: bool) -> None:
        (self.scheduled if scheduled else self.queued)[_KEY(entry)] += 1

    def leave(self, entry: Entry, scheduled: bool) -> None:
        (self.scheduled if scheduled else self.queued)[_KEY(entry)] -= 1

    def enter_all(self, entries: Iterable[Entry], scheduled: bool) -> None:
        """`enter` of each, counted in C (a load's hundred thousand)."""
        (self.scheduled if scheduled else self.queued).update(map(_KEY, entries))

    def recount_scheduled(self, entries: Iterable[Entry]) -> None:
        """The scheduled heap was rebuilt from a filter of itself (`drop`)."""
        self.scheduled = Counter(map(_KEY, entries))

    def by_class(self) -> dict[str, dict[str, int]]:
        out = {}
        for kind, counts in zip(KINDS, (self.queued, self.scheduled), strict=True):
            per = dict.fromkeys(Priority, 0)
            for (priority, _), n in counts.items():
                per[priority] += n
            out[kind] = {p.label: n for p, n in per.items()}
        return out

    def by_first_route(self, routes: Iterable[str]) -> dict[str, dict[str, int]]:
        """Per the route each would try first (every one of `routes`, 0 if none); a
        message with no route is in no count."""
        out = {}
        for kind, counts in zip(KINDS, (self.queued, self.scheduled), strict=True):
            per = dict.fromkeys(routes, 0)
            for (_, candidates), n in counts.items():
                if candidates and n:
                    per[candidates[0]] = per.get(candidates[0], 0) + n
            out[kind] = per
        return out
