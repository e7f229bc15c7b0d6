"""Strict priority with a starvation guard.

A higher class always goes first, except that each lower class with waiting work
earns `min_share` of a turn every time some other class is served; once it has earned
a whole turn it takes the next one. Under a flood of critical messages a bulk class
with `min_share = 0.02` therefore still gets about one turn in fifty, and when the
higher classes are idle the guard does nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.models import Priority

_WHOLE_TURN = 1.0 - 1e-9  # tolerate float sums like 10 x 0.1


class ShareGuard:
    def __init__(self, min_share: Mapping[Priority, float]) -> None:
        self._share = {p: min_share.get(p, 0.0) for p in Priority}
        self._credit = dict.fromkeys(Priority, 0.0)

    def order(self, waiting: Iterable[Priority]) -> list[Priority]:
        """The classes with work, in the order to try them now."""
        ready = sorted(waiting)
        owed = [p for p in ready if self._credit[p] >= _WHOLE_TURN]
        owed.sort(key=lambda p: (-self._credit[p], p))
        return owed + [p for p in ready if p not in owed]

    def served(self, served: Priority, waiting: Iterable[Priority]) -> None:
        """Record a turn taken by `served` while `waiting` classes had work."""
        for p in waiting:
            if p != served and self._share[p] > 0:
                self._credit[p] = min(1.0, self._credit[p] + self._share[p])
        self._credit[served] = max(0.0, self._credit[served] - 1.0)
