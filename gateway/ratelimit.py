"""Token buckets: pure, time passed in, so tests drive them with a fake clock."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; rate None means unlimited."""

    def __init__(self, rate: float | None, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._stamp = now

    def _refill(self, now: float) -> None:
        if self.rate is not None and now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = max(self._stamp, now)

    def try_take(self, now: float) -> bool:
        if self.rate is None:
            return True
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def reserve(self, now: float, within: float) -> float | None:
        """Take the next token before it is here, if it comes within `within` seconds:
        the seconds until it does (0: here now), else None and nothing taken. The bucket
        goes below zero meanwhile, so every later take waits behind it; the caller uses
        the token only once those seconds passed, so the rate holds where it counts (at
        the carrier) as if it had waited for the token to take it."""
        if self.rate is None:
            return 0.0
        self._refill(now)
        wait = max(0.0, (1.0 - self._tokens) / self.rate)
        if wait > within:
            return None
        self._tokens -= 1.0
        return wait

    def wait_time(self, now: float) -> float:
        """Seconds until a token is available (0 if one is now)."""
        if self.rate is None:
            return 0.0
        self._refill(now)
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    def wait_for(self, tokens: int, now: float) -> float:
        """Seconds until `tokens` are saved up (0 if they are now; inf above the burst)."""
        if self.rate is None:
            return 0.0
        if tokens > self.burst:
            return float("inf")
        self._refill(now)
        return max(0.0, (tokens - self._tokens) / self.rate)

    def set_rate(self, rate: float | None, now: float) -> None:
        self._refill(now)
        self.rate = rate
