"""Live routes: a driver plus the throughput control the gateway wraps around it."""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from drivers.base import Driver, Resumable, RouteHealth, RouteState
from gateway.config import RouteConfig
from gateway.metrics import Metrics
from gateway.ratelimit import TokenBucket
from gateway.store.queue_store import Parks
from gateway.throttle_adapt import RateEstimator

log = structlog.get_logger("smsgw.routes")

MIN_RATE_SHARE = 0.1  # a throttled route never drops below this share of its rate
MIN_DISCOVERED_RATE = 1.0  # ... nor one with no configured rate below this, per second
# A discovered rate's bucket saves up this many seconds of it: the dispatch loop wakes
# late by a few ms on a busy machine, and a bucket of 1 would lose those tokens.
DISCOVERED_BURST_S = 0.02


class WindowSlots(asyncio.Semaphore):
    """A route's slots at the carrier's window: a semaphore that also hands out every
    slot free now in one call (`take_free`), for a group taking as many as it can."""

    def take_free(self, most: int) -> int:
        """Up to `most` slots free now, taken without waiting: as many `acquire()`s as
        would not wait, one after the other (none while someone waits for a slot)."""
        if most <= 0 or self.locked():
            return 0
        taken = min(most, self._value)
        self._value -= taken
        return taken


class SharedRate(Protocol):
    """A carrier account's rate shared with other nodes (`gateway/cluster/shared_rate.py`):
    the carrier's answers adapt it there, for every node, instead of this route's bucket."""

    def throttled(self, now: float) -> None: ...

    def accepted(self, now: float) -> None: ...


@dataclass(slots=True)
class RouteRuntime:
    config: RouteConfig
    driver: Driver
    bucket: TokenBucket
    dispatched: int = 0  # claimed for this route and not yet answered by the carrier
    critical_dispatched: int = 0  # of them, critical messages
    in_flight: int = 0  # at the carrier now; at most `window`
    paused: bool = False  # by an operator
    auth_failed: bool = False  # the driver parked: the carrier refused its credentials
    cool_until: float = 0.0
    reported_state: str | None = None  # the health state last put in the outbox
    counters: dict[str, int] = field(default_factory=dict)
    slots: WindowSlots = field(init=False)
    estimator: RateEstimator | None = None  # made at the first carrier answer
    shared_rate: SharedRate | None = None  # on a cluster, a route sending on an account
    # Monotonic time before which nothing is claimed: the account's shared bucket is empty.
    # Not in a critical message's lane: its take is one statement and may find a token
    # no bulk claim took yet (S6); refused, it waits as long (`Held`).
    held_until: float = 0.0
    here: bool = True  # False on a cluster node not in the route's `eligible_nodes`

    @property
    def name(self) -> str:
        return self.config.name

    def health(self) -> RouteHealth:
        return self.driver.health()

    def usable(self, now: float) -> bool:
        """Healthy and not paused: messages may be routed here (maybe after a wait)."""
        return not self.paused and now >= self.cool_until and self.health().can_send

    def __post_init__(self) -> None:
        self.slots = WindowSlots(self.config.window)

    @property
    def dispatch_limit(self) -> int:
        """Messages that may be claimed at once: the window at the carrier, and
        `claim_ahead` more being made durable, so the claims' fsyncs overlap the
        carrier's round trips (and group into larger commits)."""
        return self.config.window + self.config.claim_ahead_or_default

    def _limit(self, lane: bool) -> int:
        # A critical message has a lane of one more window past the claims made ahead
        # while other classes hold some of them: it is claimed at once, its commit
        # overlapping theirs, rather than after a bulk message's answer (S6). The
        # carrier's window itself (`slots`) holds.
        if lane and self.critical_dispatched < self.dispatch_limit:
            return self.dispatch_limit + self.config.window
        return self.dispatch_limit

    def wait_time(self, now: float, *, lane: bool = False) -> float:
        """0 if a submit may start now; inf while the window is full."""
        if self.dispatched >= self._limit(lane):
            return math.inf
        if now < self.held_until and not lane:
            return self.held_until - now
        return self.bucket.wait_time(now)

    def take(self, now: float, *, critical: bool = False, lane: bool = False) -> bool:
        if now < self.held_until and not lane:
            return False
        if self.dispatched >= self._limit(lane) or not self.bucket.try_take(now):
            return False
        self.dispatched += 1
        self.critical_dispatched += critical
        return True

    def reserve(self, now: float, within: float) -> float | None:
        """A critical message in its lane (`_limit`) when the rate's token is not here
        yet: it takes the next one ahead of every other class, if it comes within
        `within` seconds; the seconds until it does (the submit waits them), else None
        and nothing taken. Not while the shared account's bucket is empty (`held_until`):
        that wait is the cluster's, not this bucket's."""
        if now < self.held_until or self.dispatched >= self._limit(lane=True):
            return None
        ahead = self.bucket.reserve(now, within)
        if ahead is None:
            return None
        self.dispatched += 1
        self.critical_dispatched += 1
        return ahead

    def release(self, *, critical: bool = False) -> None:
        self.dispatched -= 1
        self.critical_dispatched -= critical

    def throttled(self, now: float) -> None:
        """The carrier pushed back: the rate drops to a little under what it accepted
        over the last second, once per overload (`throttle_adapt.py`). A route with no
        configured rate gets one; a configured one never drops below a tenth of it. On a
        carrier account shared with other nodes, the account's shared rate drops instead."""
        if self.shared_rate is not None:
            self.shared_rate.throttled(now)
            return
        self._adapt(self._estimator(now).throttled(now), now)

    def succeeded(self, now: float, count: int = 1) -> None:
        """`count` submits went through: while the rate limits us and no throttle came
        for a second, probe upward, never above the configured rate."""
        if self.shared_rate is not None:
            for _ in range(count):
                self.shared_rate.accepted(now)
            return
        self._adapt(self._estimator(now).accepted(now, count), now)

    @property
    def discovered_rate(self) -> float | None:
        """The rate the carrier's last throttle showed; None if it never throttled."""
        return None if self.estimator is None else self.estimator.discovered

    def _estimator(self, now: float) -> RateEstimator:
        if self.estimator is None:
            configured = self.config.rate
            floor = MIN_DISCOVERED_RATE if configured is None else configured * MIN_RATE_SHARE
            self.estimator = RateEstimator(configured, floor, now)
        return self.estimator

    def _adapt(self, rate: float | None, now: float) -> None:
        if rate is None:
            return
        self.bucket.set_rate(rate, now)
        if self.config.rate is None:
            self.bucket.burst = max(self.config.burst, math.ceil(rate * DISCOVERED_BURST_S))

    def observe_health(self, metrics: Metrics) -> bool | None:
        """Raise the alert when the driver parks (the carrier refused its credentials:
        an error in the log, `smsgw_route_auth_failed` 1) and clear it when it leaves;
        True when it just parked, False when it just left, None if neither."""
        health = self.health()
        parked = health.state is RouteState.PARKED
        if parked == self.auth_failed:
            return None
        self.auth_failed = parked
        metrics.route_auth_failed.labels(self.name).set(1 if parked else 0)
        if parked:
            metrics.route_auth_refusals.labels(self.name).inc()
            log.error("route_auth_failed", route=self.name, detail=health.detail)
        else:
            log.info("route_auth_cleared", route=self.name, state=health.state.value)
        return parked

    def set_paused(self, paused: bool) -> bool:
        """An operator's pause or resume. Resuming a route parked for its credentials
        also has its driver try them once more; True if it did."""
        self.paused = paused
        if paused or not isinstance(self.driver, Resumable):
            return False
        return self.driver.resume()

    @property
    def awaits_resume(self) -> bool:
        """Parked by a driver that binds again only when resumed (refused credentials)."""
        return self.health().state is RouteState.PARKED and isinstance(self.driver, Resumable)

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
            "configured_rate": self.config.rate,
            "discovered_rate": self.discovered_rate,  # from the carrier's throttling
            "burst": self.bucket.burst,
            "window": self.config.window,
            "in_flight": self.in_flight,
            "paused": self.paused,
            # the alert: the carrier refused the credentials; resume after fixing them
            "auth_failed": h.state is RouteState.PARKED,
            "classes": list(self.config.classes),
            "spread": self.config.spread,  # false: a spreading class comes only on failover
            "counters": {**h.counters, **{f"gateway_{k}": v for k, v in self.counters.items()}},
            **({"members": {k: dict(v) for k, v in h.members.items()}} if h.members else {}),
        }


async def note_parks(
    routes: Iterable[RouteRuntime], parks: Parks, metrics: Metrics, now: float
) -> None:
    """Alert on routes that parked or left it, and remember (or forget) the refused
    credentials' MAC so that a restart with the same ones stays parked. Each route
    whose health state changed is reported through the outbox (`route.health`)."""
    routes = list(routes)
    await _report_health(routes, parks, now)
    for route in routes:
        changed = route.observe_health(metrics)
        driver = route.driver
        if changed is None or not isinstance(driver, Resumable):
            continue
        try:
            code = driver.parked_code
            if changed and code is not None:
                await parks.remember(route.name, code, driver.credentials_mac(parks.key), now)
            elif not changed:
                await parks.forget(route.name)
        except Exception as e:  # the alert stands; only the memory of it is lost
            log.error("route_park_not_stored", route=route.name, error=type(e).__name__)


async def _report_health(routes: list[RouteRuntime], parks: Parks, now: float) -> None:
    changed = {
        route.name: state
        for route in routes
        if (state := route.health().state.value) != route.reported_state
    }
    if not changed:
        return
    try:
        await parks.report_health(list(changed.items()), now)
    except Exception as e:  # reported at the next change instead
        log.error("route_health_not_stored", error=type(e).__name__)
        return
    for route in routes:
        route.reported_state = changed.get(route.name, route.reported_state)


async def restore_parks(routes: Iterable[RouteRuntime], parks: Parks) -> None:
    """Before the drivers start: a route whose credentials the carrier refused before
    a restart starts parked if they are unchanged; changed ones are tried."""
    remembered = await parks.all()
    for route in routes:
        park, driver = remembered.get(route.name), route.driver
        if park is None or not isinstance(driver, Resumable):
            continue
        try:
            mac = driver.credentials_mac(parks.key)
        except ValueError:  # unreadable: the driver cannot start either; keep the memory
            continue
        if hmac.compare_digest(mac, park.credentials_mac):
            driver.park(park.code)
        else:
            log.info("route_credentials_changed", route=route.name)
            await parks.forget(route.name)
