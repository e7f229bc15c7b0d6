"""Login throttling, pure: failures in, wait time out (NIST 800-63B §5.2.2, ASVS 6.3.1).

Failures are counted per account name (known or not, so the answer never tells which)
and per source address. After `throttle_after` failures each next attempt must wait
1 s, 2 s, 4 s, ... up to `max_delay`; at `max_failed_logins` consecutive failures the
account name is locked for `lockout_minutes` (a source is only ever delayed, so one
address cannot lock every admin out, and a lock always ends by itself; an admin can lift
it sooner with `smsgw user unlock`). A success clears the account's count; any count
is forgotten after `lockout_minutes` without a failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.admin.repo import FailureState
from gateway.config import AdminConfig


@dataclass(frozen=True, slots=True)
class LoginThrottle:
    throttle_after: int
    max_delay: float
    max_failures: int
    lockout_seconds: float

    @classmethod
    def from_config(cls, c: AdminConfig) -> LoginThrottle:
        return cls(c.throttle_after, c.max_delay, c.max_failed_logins, c.lockout_minutes * 60)

    def current(self, state: FailureState, now: float) -> FailureState:
        """The state as it stands at `now`: an expired lock, or a lockout period with no
        failure, starts the count afresh."""
        if state.locked_until is not None:
            return FailureState() if now >= state.locked_until else state
        if now - state.last_failure >= self.lockout_seconds:
            return FailureState()
        return state

    def wait(self, state: FailureState, now: float) -> float:
        """Seconds before the next attempt may be tried (0: now)."""
        state = self.current(state, now)
        if state.locked_until is not None:
            return state.locked_until - now
        over = state.failures - self.throttle_after
        if over <= 0:
            return 0.0
        delay = min(2.0 ** (over - 1), self.max_delay)
        return max(0.0, state.last_failure + delay - now)

    def locked(self, state: FailureState, now: float) -> bool:
        return self.current(state, now).locked_until is not None

    def after_failure(self, state: FailureState, now: float, *, can_lock: bool) -> FailureState:
        state = self.current(state, now)
        failures = state.failures + 1
        locked_until = None
        if can_lock and failures >= self.max_failures:
            locked_until = now + self.lockout_seconds
        return FailureState(failures, now, locked_until)
