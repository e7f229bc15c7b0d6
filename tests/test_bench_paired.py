"""The consent bench's figures from paired slices (bench/README.md, "Accept rate with
the consent policy"): the interval of the median pair ratio holds its coverage, and a
process's CPU is read from the scheduler's counts."""

from __future__ import annotations

import math
import os
import random
import sys
import threading
import time
from pathlib import Path
from statistics import NormalDist

import pytest
from hypothesis import given
from hypothesis import strategies as st

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import paired  # noqa: E402 - bench/ is put on the path just above


def coverage(n: int, k: int) -> float:
    """The chance that x(k)..x(n+1-k) of n draws holds their median."""
    return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n


@pytest.mark.parametrize("n", [5, 6, 9, 16, 24, 40])
def test_the_interval_is_the_narrowest_that_covers_nine_times_in_ten(n: int) -> None:
    values = [float(i) for i in range(1, n + 1)]
    low, high = paired.median_interval(values)
    k = int(low)
    assert high == n + 1 - k
    assert coverage(n, k) >= 0.9
    assert k == n // 2 or coverage(n, k + 1) < 0.9


def test_the_interval_holds_the_median_as_often_as_it_says() -> None:
    """Skewed, heavy-tailed pair ratios (a slow slice now and then): 2,000 benches of
    16 pairs, the interval holds the true median at least nine times in ten."""
    rng = random.Random(7)
    scale = 0.92
    true_median = _mixed_median(scale)
    held = 0
    for _ in range(2_000):
        ratios = [
            scale * math.exp(rng.gauss(0, 0.08)) * rng.choice((1.0, 1.0, 1.0, 0.7))
            for _ in range(16)
        ]
        low, high = paired.median_interval(ratios)
        held += low <= true_median <= high
    assert held / 2_000 >= 0.89


def _mixed_median(m: float) -> float:
    """Median of m * lognormal(0, 0.08) * (0.7 with chance 1/4): where the mixture's
    distribution function is 1/2, found by bisection."""
    z = NormalDist(0, 0.08)

    def cdf(x: float) -> float:
        return 0.75 * z.cdf(math.log(x / m)) + 0.25 * z.cdf(math.log(x / (0.7 * m)))

    lo, hi = 0.1, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < 0.5 else (lo, mid)
    return lo


@given(st.lists(st.floats(0.1, 10.0), min_size=1, max_size=60))
def test_the_interval_holds_the_sample_median(values: list[float]) -> None:
    low, high = paired.median_interval(values)
    assert low <= sorted(values)[(len(values) - 1) // 2] <= high
    q1, q3 = paired.quartiles(values)
    assert min(values) <= q1 <= q3 <= max(values)


def test_a_process_cpu_is_counted_in_every_thread() -> None:
    """A thread that spins for 50 ms of its own CPU shows in the process's total (read
    while it lives: a thread that has ended is no longer counted, and the gateway's
    threads live as long as it does)."""
    spun, read = threading.Event(), threading.Event()

    def spin() -> None:
        until = time.thread_time() + 0.05
        while time.thread_time() < until:
            pass
        spun.set()
        read.wait(10)

    before = paired.schedstat_seconds(os.getpid())
    worker = threading.Thread(target=spin)
    worker.start()
    try:
        assert spun.wait(10)
        used = paired.schedstat_seconds(os.getpid()) - before
    finally:
        read.set()
        worker.join()
    assert used >= 0.045
