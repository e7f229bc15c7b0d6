"""What the sums hold: dimensions, metric names, the delivery latency histogram, and
the figures a report reads back from them.

A metric is a name (`sent`, `blocked:quiet_hours`, `lat_60`, ...) with a count per
dimension, key and day: a column of `analytics_daily` (one row per dimension, key and
day, so a year of one clinic is 365 rows), or for a blocked reason a row of
`analytics_blocked`. Counts only: nothing about a person is kept, and every key is
an id or a configured code (a campaign id, `campaign/variant`, a rule id, a clinic's
location code, a purpose, a route name).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class Dimension(enum.StrEnum):
    TOTAL = "total"
    CAMPAIGN = "campaign"
    TEMPLATE = "template"  # a template variant: `<campaign or template>/<variant>`
    RULE = "rule"
    CLINIC = "clinic"
    PURPOSE = "purpose"
    ROUTE = "route"


# Upper edges (seconds) of the sent -> delivered latency buckets; the last is open.
LATENCY_EDGES: tuple[int, ...] = (
    5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, 259200,
)  # fmt: skip
OVER = "lat_over"
BLOCKED = "blocked:"  # + the reason: kept in `analytics_blocked`, one row per reason

# Plain counters, in the order reports show them.
COUNTERS: tuple[str, ...] = (
    "sent",
    "delivered",
    "failed",
    "expired",
    "blocked",
    "replied_confirm",
    "replied_cancel",
    "replied_other",
    "opted_out",
    "clicked",
    "clicks",
    "parts",
    "appointments_reminded",
    "appointments_unreminded",
    "noshow_reminded",
    "noshow_unreminded",
)


LATENCY_COLUMNS: tuple[str, ...] = (*(f"lat_{e}" for e in LATENCY_EDGES), OVER)
# The columns of `analytics_daily`, one per metric (blocked is the sum of its reasons).
COLUMNS: tuple[str, ...] = (*(c for c in COUNTERS if c != "blocked"), *LATENCY_COLUMNS)


def latency_metric(seconds: float) -> str:
    for edge in LATENCY_EDGES:
        if seconds <= edge:
            return f"lat_{edge}"
    return OVER


@dataclass(frozen=True, slots=True)
class Figures:
    """The figures of one key (or one day) over a range."""

    counts: Mapping[str, int]  # COUNTERS, each present
    blocked_by_reason: Mapping[str, int]
    latency: Mapping[str, int]  # histogram: "<=5s" ... ">259200s"
    latency_p50: float | None  # the upper edge of the bucket holding the median (seconds)
    latency_p90: float | None
    noshow_rate_reminded: float | None
    noshow_rate_unreminded: float | None

    def __getitem__(self, name: str) -> int:
        return self.counts[name]


def _quantile(hist: list[tuple[float | None, int]], q: float) -> float | None:
    total = sum(n for _, n in hist)
    if total == 0:
        return None
    want, seen = q * total, 0
    for edge, n in hist:
        seen += n
        if seen >= want:
            return edge
    return None


def _rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 4)


def figures_of(metrics: Mapping[str, int]) -> Figures:
    """Figures from summed metrics (what `report.py` reads)."""
    counts = dict.fromkeys(COUNTERS, 0)
    reasons: dict[str, int] = {}
    latency: dict[str, int] = {}
    for name, value in metrics.items():
        if name.startswith(BLOCKED):
            reasons[name.removeprefix(BLOCKED)] = value
        elif name.startswith("lat_"):
            latency[name] = value
        elif name in counts:
            counts[name] = value
    counts["blocked"] = sum(reasons.values())
    hist: list[tuple[float | None, int]] = [
        (float(edge), latency.get(f"lat_{edge}", 0)) for edge in LATENCY_EDGES
    ]
    hist.append((None, latency.get(OVER, 0)))
    shown = {f"<={edge}s": latency.get(f"lat_{edge}", 0) for edge in LATENCY_EDGES}
    shown[f">{LATENCY_EDGES[-1]}s"] = latency.get(OVER, 0)
    return Figures(
        counts=counts,
        blocked_by_reason=dict(sorted(reasons.items())),
        latency=shown,
        latency_p50=_quantile(hist, 0.5),
        latency_p90=_quantile(hist, 0.9),
        noshow_rate_reminded=_rate(counts["noshow_reminded"], counts["appointments_reminded"]),
        noshow_rate_unreminded=_rate(
            counts["noshow_unreminded"], counts["appointments_unreminded"]
        ),
    )
