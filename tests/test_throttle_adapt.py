"""The rate estimator (`gateway/throttle_adapt.py`) against a modelled carrier.

A carrier is a token bucket answering the excess with a throttle; the sender is a
route: its own token bucket at the estimator's rate, a window of submits in flight, a
round trip, and the driver's pause after a throttle. Everything runs on a `FakeClock`
moved in 2 ms steps, so ten seconds of carrier time take a fraction of a real one.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from drivers.clock import FakeClock
from gateway.ratelimit import TokenBucket
from gateway.throttle_adapt import MARGIN, RateEstimator

STEP = 0.002


@dataclass
class Run:
    first_throttle: float | None
    accepted: list[float]  # carrier-side accept times, seconds from the start
    throttles: int
    cuts: int
    est: RateEstimator
    rates: list[tuple[float, float | None]] = field(default_factory=list)

    def per_second(self, start: float, end: float) -> float:
        return sum(1 for t in self.accepted if start <= t < end) / (end - start)


def simulate(
    carrier: list[tuple[float, float]],
    duration: float,
    *,
    rtt: float = 0.02,
    window: int = 50,
    pause: float = 0.1,
    ceiling: float | None = None,
    carrier_burst: int | None = None,
) -> Run:
    """`carrier`: (from second, rate) steps of the carrier's limit; its burst is a
    second of its first rate unless given. The sender has no rate until the estimator
    sets one."""
    clock = FakeClock()
    t0 = clock.monotonic()
    est = RateEstimator(ceiling, 1.0, t0)
    ours = TokenBucket(ceiling, 2, t0)  # about the default burst of 1: the loop runs in steps
    theirs = TokenBucket(carrier[0][1], carrier_burst or int(carrier[0][1]), t0)
    answers: list[tuple[float, int, bool]] = []
    seq = in_flight = throttles = cuts = 0
    paused_until, first, accepted = 0.0, None, []
    run = Run(None, accepted, 0, 0, est)
    phase = 0
    while (now := clock.monotonic()) - t0 < duration:
        while phase + 1 < len(carrier) and carrier[phase + 1][0] <= now - t0:
            phase += 1
            theirs.set_rate(carrier[phase][1], now)
        while answers and answers[0][0] <= now:
            at, _, ok = heapq.heappop(answers)
            in_flight -= 1
            if ok:
                accepted.append(at - t0)
                new = est.accepted(at)
            else:
                throttles += 1
                first = at if first is None else first
                if at >= paused_until:  # the driver pauses once per overload
                    paused_until = at + pause
                new = est.throttled(at)
                cuts += new is not None
            if new is not None:
                ours.set_rate(new, at)
                run.rates.append((at - t0, new))
        while now >= paused_until and in_flight < window and ours.try_take(now):
            ok = theirs.try_take(now + rtt / 2)
            in_flight += 1
            seq += 1
            heapq.heappush(answers, (now + rtt, seq, ok))
        clock.advance(STEP)
    run.first_throttle = None if first is None else first - t0
    run.throttles, run.cuts = throttles, cuts
    return run


def test_a_route_with_no_rate_finds_the_carriers_within_ten_seconds_and_holds_it() -> None:
    run = simulate([(0, 200)], 30)
    assert run.first_throttle is not None and run.first_throttle < 1
    found = run.first_throttle + 10
    assert run.per_second(found, 30) >= 0.9 * 200
    for second in range(int(found) + 1, 29, 2):  # held: every two seconds, not on average
        assert run.per_second(second, second + 2) >= 0.85 * 200, second
    assert run.est.discovered is not None and 0.85 * 200 <= run.est.discovered <= 1.1 * 200


def test_a_window_of_throttles_cuts_the_rate_once() -> None:
    est = RateEstimator(None, 1.0, 0.0)
    for i in range(200):
        est.accepted(i / 400)  # 400/s accepted for half a second
    first = est.throttled(0.5)
    assert first == pytest.approx(400 * MARGIN)
    # the rest of the window in flight comes back throttled: no further cut
    assert all(est.throttled(0.5 + i / 1000) is None for i in range(1, 50))
    assert est.rate == first
    assert est.throttled(1.6) is not None  # a window later it is a new overload


def test_nothing_accepted_halves_the_rate_and_never_below_the_floor() -> None:
    est = RateEstimator(10.0, 1.0, 0.0)
    assert est.throttled(0.0) == 5.0
    assert est.throttled(1.0) == 2.5
    for k in range(2, 10):
        est.throttled(float(k))
    assert est.rate == 1.0
    unknown = RateEstimator(None, 1.0, 0.0)
    assert unknown.throttled(0.0) is None  # nothing to measure: no rate made up
    assert unknown.rate is None and unknown.discovered is None


def test_never_probes_above_the_configured_rate() -> None:
    run = simulate([(0, 400)], 8, ceiling=150)
    assert run.throttles == 0 and run.est.rate == 150
    run = simulate([(0, 100)], 15, ceiling=150)  # the carrier is stricter than the contract
    assert max(r for _, r in run.rates if r is not None) <= 150
    assert run.per_second(10, 15) >= 0.9 * 100


def test_an_idle_route_does_not_probe() -> None:
    """A trickle well under the rate teaches nothing: the rate stays where it was."""
    est = RateEstimator(None, 1.0, 0.0)
    for i in range(100):
        est.accepted(i / 100)
    est.throttled(1.0)
    found = est.rate
    for second in range(3, 60):
        assert est.accepted(float(second)) is None
    assert est.rate == found


def test_tracks_a_carrier_whose_limit_changes_200_50_300() -> None:
    run = simulate([(0, 200), (15, 50), (30, 300)], 50)
    assert run.per_second(10, 15) >= 0.9 * 200
    assert run.per_second(18, 30) >= 0.9 * 50  # found within three seconds of the drop
    assert run.per_second(18, 30) <= 1.1 * 50  # and not overrunning it
    assert run.per_second(40, 50) >= 0.9 * 300  # the rise found within ten seconds


@settings(max_examples=25, deadline=None)
@given(
    rate=st.sampled_from([20.0, 50.0, 200.0, 600.0]),
    rtt=st.sampled_from([0.002, 0.02, 0.1]),
    window=st.integers(10, 100),
    pause=st.sampled_from([0.0, 0.05, 0.1]),
)
def test_any_carrier_rate_is_found_within_ten_seconds(
    rate: float, rtt: float, window: int, pause: float
) -> None:
    """Whatever the round trip and the window (as long as the window can carry the
    rate), 0.9 of the carrier's rate within ten seconds of its first throttle, held."""
    assume(window / rtt >= 1.5 * rate)  # else the window, not the carrier, is the limit
    run = simulate([(0, rate)], 24, rtt=rtt, window=window, pause=pause)
    assert run.first_throttle is not None
    found = run.first_throttle + 10
    assert run.per_second(found, 24) >= 0.9 * rate
    assert run.per_second(found, 24) <= 1.1 * rate


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateEstimator(None, 0.0, 0.0)
    with pytest.raises(ValueError, match="positive"):
        RateEstimator(None, 1.0, 0.0, window=0)
