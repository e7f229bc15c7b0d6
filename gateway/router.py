"""Which routes may carry a message, in preference order (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.models import Priority


@dataclass(frozen=True, slots=True)
class RouteRule:
    name: str
    classes: frozenset[Priority]
    prefixes: tuple[str, ...]

    def allows(self, to: str, priority: Priority) -> bool:
        if priority not in self.classes:
            return False
        return not self.prefixes or any(to.startswith(p) for p in self.prefixes)


class Router:
    """Routes are tried in configuration order; rules filter by class and prefix."""

    def __init__(self, rules: Sequence[RouteRule]) -> None:
        self._rules = tuple(rules)
        # Without prefixes a message's routes depend on its class and hint only: one
        # tuple each, shared by every queued message (a start-up with a big queue
        # neither decrypts its numbers nor holds a tuple per message).
        self._by_class: dict[tuple[Priority, str | None], tuple[str, ...]] = {}
        self._by_number = any(r.prefixes for r in self._rules)
        self._names = frozenset(r.name for r in self._rules)

    @property
    def routes_by_number(self) -> bool:
        """True if some rule looks at the number (a prefix)."""
        return self._by_number

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self._rules)

    def candidates(self, to: str, priority: Priority, hint: str | None = None) -> tuple[str, ...]:
        """Routes allowed for this message; a `route` the client named restricts to it."""
        if not self._by_number and (hint is None or hint in self._names):
            key = (priority, hint)
            found = self._by_class.get(key)
            if found is None:
                found = self._by_class[key] = self._candidates(to, priority, hint)
            return found
        return self._candidates(to, priority, hint)

    def _candidates(self, to: str, priority: Priority, hint: str | None) -> tuple[str, ...]:
        allowed = tuple(r.name for r in self._rules if r.allows(to, priority))
        if hint is not None:
            return tuple(n for n in allowed if n == hint)
        return allowed
