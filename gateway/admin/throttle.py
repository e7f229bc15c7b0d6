"""Login throttling, pure: failure counts in, a decision out (NIST 800-63B §5.2.2, ASVS 6.3.1).

Failures are counted per account name (known or not, so the answer never tells which)
and per source address; second-factor failures have a count of their own, which a
right password does not reset. After `throttle_after` failures each next attempt must
wait 1 s, 2 s, 4 s, ... up to `max_delay`; at `max_failed_logins` consecutive failures
of either the password or the code the account name is locked for `lockout_minutes` (a
source is only ever delayed, so one address cannot lock every admin out, and a lock
always ends by itself; an admin can lift it sooner with `smsgw user unlock`). A success
clears the count it proved; any count is forgotten after `lockout_minutes` without a
failure.

Theory of operation. An attempt is counted as failed *before* it is checked:
`reserve()` takes the counts as they stand and either refuses (with the wait) or
returns them with this attempt added, locks included. The caller writes that in the
same transaction it read the counts in (`PanelStore.reserve_attempt`: SQLite's one
writer, or on a cluster PostgreSQL locks on the keys, so the nodes queue alike), so
parallel attempts queue on the count, not on the check: however many arrive at once,
only as many pass as the throttle allows, and the costly argon2 run (or the code check)
happens only for those. A success then clears the count it proved and takes its one
failure back from the others (`PanelStore.settle_attempt`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.config import AdminConfig
from gateway.panel_users import FailureState


@dataclass(frozen=True, slots=True)
class Reservation:
    """`wait` > 0: refused, nothing counted. Otherwise `after` holds the counts with this
    attempt counted as failed (what is stored), `before` the counts it replaced."""

    wait: float
    before: Mapping[str, FailureState] = field(default_factory=dict)
    after: Mapping[str, FailureState] = field(default_factory=dict)
    locking: tuple[str, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.wait <= 0


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
        delay = min(2.0 ** min(over - 1, 62), self.max_delay)
        return max(0.0, state.last_failure + delay - now)

    def locked(self, state: FailureState, now: float) -> bool:
        return self.current(state, now).locked_until is not None

    def lock_wait(self, state: FailureState, now: float) -> float:
        """Seconds until a lock ends (0: not locked); delays do not count."""
        locked_until = self.current(state, now).locked_until
        return 0.0 if locked_until is None else locked_until - now

    def after_failure(self, state: FailureState, now: float, *, can_lock: bool) -> FailureState:
        state = self.current(state, now)
        failures = state.failures + 1
        locked_until = None
        if can_lock and failures >= self.max_failures:
            locked_until = now + self.lockout_seconds
        return FailureState(failures, now, locked_until)

    def reserve(
        self,
        states: Mapping[str, FailureState],
        now: float,
        *,
        counted: Sequence[str],
        lockable: Collection[str] = (),
        guards: Sequence[str] = (),
    ) -> Reservation:
        """Decide one attempt: every `counted` key must allow it now, and no `guards`
        key may be locked (another factor's count locks the account too). If allowed,
        each counted key gets one failure; a `lockable` one that reaches the limit is
        locked and named in `locking`."""
        wait = max(
            [self.wait(states[k], now) for k in counted]
            + [self.lock_wait(states[k], now) for k in guards]
        )
        if wait > 0:
            return Reservation(wait)
        before = {k: self.current(states[k], now) for k in counted}
        after = {k: self.after_failure(s, now, can_lock=k in lockable) for k, s in before.items()}
        locking = tuple(k for k, s in after.items() if s.locked_until is not None)
        return Reservation(0.0, before, after, locking)
