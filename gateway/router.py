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

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self._rules)

    def candidates(self, to: str, priority: Priority, hint: str | None = None) -> tuple[str, ...]:
        """Routes allowed for this message; a `route` the client named restricts to it."""
        allowed = tuple(r.name for r in self._rules if r.allows(to, priority))
        if hint is not None:
            return tuple(n for n in allowed if n == hint)
        return allowed
