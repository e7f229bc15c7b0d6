"""Paired slices of two sides of a benchmark, and what their ratios can tell.

A shared machine moves a slice's rate by more than some effects a bench looks for
(`consent.py`: the checks' 5-10 %). Each pair's ratio is taken between two slices
run back to back, so slow drift cancels; the median of many pairs resists the few a
burst of other work lands on; and the interval below says how far the median itself
may be off, with no assumption about how the pairs' ratios are spread.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path


def median_interval(values: Sequence[float], confidence: float = 0.9) -> tuple[float, float]:
    """A distribution-free interval for the median of what `values` are drawn from
    (independent draws): order statistics x(k) and x(n+1-k), with the largest k whose
    coverage, 1 - 2 P(Binomial(n, 1/2) < k), is at least `confidence`. With too few
    values for that, the smallest and largest."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        raise ValueError("no values")
    below = 0.0  # P(Binomial(n, 1/2) < k) for the k tried next
    k = 0
    while k + 1 <= n // 2:
        tail = below + math.comb(n, k) / 2**n  # P(... < k + 1)
        if 1 - 2 * tail < confidence:
            break
        below, k = tail, k + 1
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """The first and third quartiles (the middle half of the values lies between)."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def schedstat_seconds(pid: int) -> float:
    """CPU seconds so far of all a process's threads, from the scheduler's own count
    in nanoseconds (`/proc/<pid>/task/*/schedstat`), not the 10 ms ticks of `stat`: a
    1 s slice read in ticks is off by up to 1 % a thread. Threads that ended are not
    counted: the gateway's (event loop, writer, readers) live as long as it does."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return total / 1e9
