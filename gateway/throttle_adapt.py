"""Finding a carrier's rate from its throttling: pure, time passed in.

A carrier that answers the excess over its rate with a throttle status (SMPP
ESME_RTHROTTLED) tells us we went too fast, not how fast it allows. What it accepted
in the last `window` seconds does tell us: while we send faster than it allows, that
is its rate. So, on a throttle, the route's rate becomes a little under the accepted
rate measured over the last window (or half the current rate if nothing went through;
a route with no rate stays unlimited until something was accepted to measure),
at most once a window: a window of submits in flight comes back as a burst of throttles
for one overload, and each must not cut the rate again (early on, when the measurement
spans less than a window, the next cut may come once it spans twice as long). A route
with no configured rate gets one this way (`discovered`).

While no throttle comes and the route is busy (the rate, not the queue, limits what we
send), the rate is probed upward: by `step` per second, the step doubling after each
half window without a throttle, so a carrier that raised its limit is found in a few
seconds, and a carrier near the rate is probed gently. Never above the configured rate,
never below `floor`.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import repeat

MARGIN = 0.95  # a throttle sets the rate this far under what the carrier accepted
PROBE_SHARE = 0.01  # the first probe step: this share of the rate, per second
MIN_STEP = 0.5  # ... at least this many messages a second, per second
BUSY_SHARE = 0.8  # probe only while we send at least this share of the rate


class RateEstimator:
    """The rate a route may send at, learnt from a carrier's accepts and throttles.

    `rate` None means no limit (a route with no configured rate before its carrier
    first throttled it). Each `accepted`/`throttled` call returns the new rate when it
    changed, else None."""

    def __init__(
        self, ceiling: float | None, floor: float, now: float, window: float = 1.0
    ) -> None:
        if window <= 0 or floor <= 0:
            raise ValueError("window and floor must be positive")
        self.ceiling = ceiling
        self.floor = floor if ceiling is None else min(floor, ceiling)
        self.window = window
        self.rate: float | None = ceiling
        self.discovered: float | None = None  # the rate the last throttle set
        self._accepts: deque[float] = deque()
        self._started = now
        self._last_cut = -math.inf
        self._hold = window  # after a cut, throttles this long after it are the same overload
        self._last_throttle = -math.inf
        self._probed_at = now
        self._base_step = MIN_STEP

    def accepted_rate(self, now: float) -> float:
        """What the carrier accepted over the last window, per second."""
        self._forget(now)
        # Early on, the short span since the first answer overstates the rate rather
        # than understating it: too high is cut again a window later, too low would
        # have to be probed back up.
        span = min(self.window, max(now - self._started, self.window / 100))
        return len(self._accepts) / span

    def accepted(self, now: float, count: int = 1) -> float | None:
        """`count` accepts at `now`: as many calls at that time would answer (the first
        may probe; the rest find no time elapsed and only count)."""
        self._accepts.append(now)
        self._forget(now)
        try:
            return self._probe(now)
        finally:
            if count > 1:
                self._accepts.extend(repeat(now, count - 1))

    def _probe(self, now: float) -> float | None:
        elapsed, self._probed_at = min(now - self._probed_at, self.window), now
        rate = self.rate
        if rate is None or elapsed <= 0 or now - self._last_throttle < self.window:
            return None
        if self.ceiling is not None and rate >= self.ceiling:
            return None
        if self.accepted_rate(now) < BUSY_SHARE * rate:
            return None  # the queue, not the rate, limits us: nothing learnt
        doublings = min(int(2 * (now - self._last_throttle) / self.window) - 2, 20)
        step = min(self._base_step * 2.0**doublings, rate / 2)
        return self._set(rate + step * elapsed)

    def throttled(self, now: float) -> float | None:
        self._last_throttle = now
        if now - self._last_cut < self._hold:
            return None  # the same overload answered by the rest of the window
        measured = self.accepted_rate(now)
        if measured > 0:
            target = min(self.rate or math.inf, measured) * MARGIN
        elif self.rate is not None:
            target = self.rate / 2
        else:
            return None  # nothing to go by yet: the driver's pause holds the route back
        self._last_cut = now
        # Early on the measurement spans less than a window and may be well off: the
        # next cut may come as soon as it spans twice as long, converging in a second.
        self._hold = min(self.window, max(now - self._started, self.window / 20))
        new = self._set(target)
        self.discovered = self.rate
        self._base_step = max(MIN_STEP, PROBE_SHARE * (self.rate or 0.0))
        return new

    def _set(self, rate: float) -> float | None:
        if self.ceiling is not None:
            rate = min(rate, self.ceiling)
        rate = max(rate, self.floor)
        if rate == self.rate:
            return None
        self.rate = rate
        return rate

    def _forget(self, now: float) -> None:
        while self._accepts and self._accepts[0] <= now - self.window:
            self._accepts.popleft()
