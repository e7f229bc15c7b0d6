"""Analytics as the front ends see them: a summary, a time series, figures per
dimension, and the CSV export of the same figures (audited).

The API (`/api/v1/analytics/...`), the panel's "Analytics" page and `smsgw analytics`
call these with a `Caller`. Ranges are whole days in the site's time zone
(`[analytics] time_zone`), both ends included; everything is read from a
`FiguresSource`: on one node the daily sums the rollup keeps (`rollup.py`), never the
messages themselves; on a cluster node the shared tables (`gateway/cluster/analytics.py`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

from drivers.clock import Clock
from gateway.analytics import report
from gateway.analytics.days import day_range
from gateway.analytics.figures import COUNTERS, LATENCY_EDGES, Dimension, Figures, figures_of
from gateway.analytics.rollup import Rollup
from gateway.errors import ApiError
from gateway.store.audit_log import AuditTrail
from gateway.store.reads import ReadPool
from gateway.store.store import Store
from gateway.usecases.caller import Caller

DEFAULT_DAYS = 30
MAX_DAYS = 3 * 366
# The dimensions a report is grouped by (the API's path names them in the plural).
GROUPS = tuple(d for d in Dimension if d is not Dimension.TOTAL)


@dataclass(frozen=True, slots=True)
class Range:
    first: date
    last: date

    @property
    def days(self) -> list[str]:
        return day_range(self.first, self.last)


@dataclass(frozen=True, slots=True)
class KeyFigures:
    key: str
    figures: Figures
    name: str | None = None  # a campaign's or rule's name, for keys that are ids


@dataclass(frozen=True, slots=True)
class DayFigures:
    day: str
    figures: Figures


DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _parse_day(text: str | None, field: str) -> date | None:
    if text is None:
        return None
    try:
        if not DAY.match(text):
            raise ValueError(field)
        return date.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{field}: a date, YYYY-MM-DD", field=field) from None


def dimension_of(text: str | None, field: str = "dimension") -> Dimension:
    try:
        return Dimension(text or "total")
    except ValueError:
        names = ", ".join(d.value for d in Dimension)
        raise ApiError(400, "invalid_query", f"{field}: one of {names}", field=field) from None


class FiguresSource(Protocol):
    """Where the summed metrics of a range of days (`YYYY-MM-DD`, both included) come
    from, and the loop that keeps them (`run`, for the gateway's life)."""

    async def by_key(self, dim: str, first: str, last: str) -> dict[str, report.Metrics]: ...

    async def by_day(
        self, dim: str, key: str, first: str, last: str
    ) -> dict[str, report.Metrics]: ...

    async def names(self, dim: str, keys: list[str]) -> dict[str, str]: ...

    async def refresh(self) -> int: ...

    async def run(self) -> None: ...


class DailySums:
    """The rollup's daily sums in this node's store (`rollup.py`, `report.py`)."""

    def __init__(self, reader: ReadPool, rollup: Rollup) -> None:
        self._reader = reader
        self._rollup = rollup

    async def by_key(self, dim: str, first: str, last: str) -> dict[str, report.Metrics]:
        return await report.by_key(self._reader, dim, first, last)

    async def by_day(self, dim: str, key: str, first: str, last: str) -> dict[str, report.Metrics]:
        return await report.by_day(self._reader, dim, key, first, last)

    async def names(self, dim: str, keys: list[str]) -> dict[str, str]:
        return await report.names(self._reader, dim, keys)

    async def refresh(self) -> int:
        return await self._rollup.catch_up()

    async def run(self) -> None:
        await self._rollup.run()


class Analytics:
    """Any signed-in caller may read the figures (counts, no PHI; the front ends gate
    who reaches them); the caller is the actor of an export's audit entry."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        audit: AuditTrail,
        rollup: Rollup,
        figures: FiguresSource | None = None,
    ) -> None:
        self._clock = clock
        self._audit = audit
        self.rollup = rollup
        self._figures: FiguresSource = (
            DailySums(store.reader, rollup) if figures is None else figures
        )

    @property
    def time_zone(self) -> str:
        return self.rollup.days.zone.key

    def range_of(self, first: str | None, last: str | None) -> Range:
        """The days `first`..`last` (YYYY-MM-DD, site time zone); by default the last
        30 days up to today. Refused: a bad date, `from` after `to`, over 3 years."""
        end = _parse_day(last, "to")
        start = _parse_day(first, "from")
        if end is None:
            today = self.rollup.days.today(self._clock.time())
            end = today if start is None or start <= today else start
        if start is None:
            start = end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise ApiError(400, "invalid_range", "from: after to", field="from")
        if (end - start).days + 1 > MAX_DAYS:
            raise ApiError(
                400, "range_too_long", f"from: at most {MAX_DAYS} days in one report", field="from"
            )
        return Range(start, end)

    async def summary(self, caller: Caller, span: Range) -> Figures:
        found = await self._figures.by_key(
            Dimension.TOTAL.value, span.first.isoformat(), span.last.isoformat()
        )
        return figures_of(found.get("", {}))

    async def grouped(self, caller: Caller, dimension: Dimension, span: Range) -> list[KeyFigures]:
        """Each key of `dimension` with its figures over `span`, most sent first."""
        found = await self._figures.by_key(
            dimension.value, span.first.isoformat(), span.last.isoformat()
        )
        named = await self._figures.names(dimension.value, list(found))
        rows = [KeyFigures(k, figures_of(m), named.get(k)) for k, m in found.items()]
        rows.sort(key=lambda r: (-r.figures["sent"], -r.figures["blocked"], r.key))
        return rows

    async def timeseries(
        self, caller: Caller, span: Range, dimension: Dimension = Dimension.TOTAL, key: str = ""
    ) -> list[DayFigures]:
        """Every day of `span` (days with nothing: zeros) for one key of `dimension`."""
        found = await self._figures.by_day(
            dimension.value, key, span.first.isoformat(), span.last.isoformat()
        )
        return [DayFigures(d, figures_of(found.get(d, {}))) for d in span.days]

    async def export(
        self, caller: Caller, dimensions: Sequence[Dimension], span: Range
    ) -> list[list[object]]:
        """The figures of `dimensions` over `span` as CSV rows (a header first); audited.
        Keys are ids and codes, never a number or a text; cells are escaped on writing
        (`gateway.csv_safe`)."""
        groups: list[tuple[Dimension, list[KeyFigures]]] = []
        for d in dimensions:
            if d is Dimension.TOTAL:
                groups.append((d, [KeyFigures("", await self.summary(caller, span))]))
            else:
                groups.append((d, await self.grouped(caller, d, span)))
        reasons = sorted(
            {r for _, found in groups for k in found for r in k.figures.blocked_by_reason}
        )
        rows: list[list[object]] = [export_header(reasons)]
        for d, found in groups:
            rows.extend(export_row(d.value, k.key, k.figures, reasons, k.name) for k in found)
        await self._audit.record(
            caller.actor,
            "analytics_exported",
            "analytics",
            ",".join(d.value for d in dimensions),
            first=span.first.isoformat(),
            last=span.last.isoformat(),
            rows=len(rows) - 1,
        )
        return rows

    async def export_days(
        self, caller: Caller, span: Range, dimension: Dimension = Dimension.TOTAL, key: str = ""
    ) -> list[list[object]]:
        """`timeseries` as CSV rows (a header first, a `day` column added); audited."""
        days = await self.timeseries(caller, span, dimension, key)
        reasons = sorted({r for d in days for r in d.figures.blocked_by_reason})
        rows: list[list[object]] = [["day", *export_header(reasons)]]
        rows.extend([d.day, *export_row(dimension.value, key, d.figures, reasons)] for d in days)
        await self._audit.record(
            caller.actor,
            "analytics_exported",
            "analytics",
            f"{dimension.value}:days",
            first=span.first.isoformat(),
            last=span.last.isoformat(),
            rows=len(days),
        )
        return rows

    async def refresh(self) -> int:
        """Count everything committed until now (the rollup's own round, at once): the
        rows counted (on a cluster, the days recomputed)."""
        return await self._figures.refresh()

    async def run(self) -> None:
        """Keep the figures counted, for the gateway's life (started by `Gateway.start`)."""
        await self._figures.run()


FIGURE_COLUMNS = (
    *COUNTERS,
    "latency_p50_s",
    "latency_p90_s",
    "noshow_rate_reminded",
    "noshow_rate_unreminded",
)


def export_header(reasons: Sequence[str]) -> list[object]:
    latency = [f"latency_le_{e}s" for e in LATENCY_EDGES] + [f"latency_over_{LATENCY_EDGES[-1]}s"]
    return [
        "dimension",
        "key",
        "name",
        *FIGURE_COLUMNS,
        *(f"blocked_{r}" for r in reasons),
        *latency,
    ]


def export_row(
    dim: str, key: str, f: Figures, reasons: Sequence[str], name: str | None = None
) -> list[object]:
    return [
        dim,
        key,
        name or "",
        *(f.counts[c] for c in COUNTERS),
        f.latency_p50,
        f.latency_p90,
        f.noshow_rate_reminded,
        f.noshow_rate_unreminded,
        *(f.blocked_by_reason.get(r, 0) for r in reasons),
        *f.latency.values(),
    ]
