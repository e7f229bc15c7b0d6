"""The carrier's side of a shared rate: submits per 1 s window in the SMSC simulator's
submit log (`SubmitRecord.at`, the loop's clock), for the cluster tests and
`bench/cluster.py`."""

from __future__ import annotations

from drivers.smpp.simulator import SubmitRecord
from drivers.smpp.status import Status


def max_in_window(log: list[SubmitRecord], start: float, end: float) -> int:
    """The most submits accepted in any 1 s window within [start, end]."""
    times = sorted(r.at for r in log if start <= r.at <= end and r.status == Status.ESME_ROK)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
