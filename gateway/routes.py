"""Live routes: a driver plus the throughput control the gateway wraps around it."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from drivers.base import Driver, RouteHealth, RouteState
from gateway.config import RouteConfig
from gateway.ratelimit import TokenBucket


@dataclass(slots=True)
class RouteRuntime:
    config: RouteConfig
    driver: Driver
    bucket: TokenBucket
    dispatched: int = 0  # claimed for this route and not yet answered by the carrier
    in_flight: int = 0  # at the carrier now; at most `window`
    paused: bool = False
    cool_until: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    slots: asyncio.Semaphore = field(init=False)

    @property
    def name(self) -> str:
        return self.config.name

    def health(self) -> RouteHealth:
        return self.driver.health()

    def usable(self, now: float) -> bool:
        """Healthy and not paused: messages may be routed here (maybe after a wait)."""
        return not self.paused and now >= self.cool_until and self.health().can_send

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.config.window)

    @property
    def dispatch_limit(self) -> int:
        """Messages that may be claimed at once: the window at the carrier, and as many
        again being made durable, so fsyncs overlap the carrier's round trips."""
        return 2 * self.config.window

    def wait_time(self, now: float) -> float:
        """0 if a submit may start now; inf while the window is full."""
        if self.dispatched >= self.dispatch_limit:
            return math.inf
        return self.bucket.wait_time(now)

    def take(self, now: float) -> bool:
        if self.dispatched >= self.dispatch_limit or not self.bucket.try_take(now):
            return False
        self.dispatched += 1
        return True

    def release(self) -> None:
        self.dispatched -= 1

    def count(self, outcome: str) -> None:
        self.counters[outcome] = self.counters.get(outcome, 0) + 1

    def describe(self) -> dict[str, object]:
        h = self.health()
        state = RouteState.PARKED.value if self.paused else h.state.value
        return {
            "name": self.name,
            "type": self.config.type,
            "state": state,
            "detail": h.detail,
            "rate": self.bucket.rate,
            "burst": self.bucket.burst,
            "window": self.config.window,
            "in_flight": self.in_flight,
            "classes": list(self.config.classes),
            "counters": {**h.counters, **{f"gateway_{k}": v for k, v in self.counters.items()}},
        }
