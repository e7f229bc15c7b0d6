"""A histogram and a counter for the accept path, bumped on the event loop only.

prometheus_client's `Histogram.observe` walks its buckets in Python and takes a lock per
counter it bumps: about 3 us, once per accepted request. This one keeps plain counts
per bucket, found with `bisect` (0.3 us), and is turned into the same exposition
(`_bucket{le}`, `_count`, `_sum`) at scrape time. Only one thread may observe; a scrape
from another reads counts that are at worst one observation behind.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from typing import Generic, TypeVar

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

K = TypeVar("K")


class LoopCounter(Collector, Generic[K]):
    """A counter with one label, counted on the event loop only: `counts[key] += n` is
    a dict update where prometheus_client's `labels(...).inc()` was four Python calls
    and a lock (1.2 us) per accepted request. Exposed as the same counter family
    (`<name>_total{label}`), every key listed from the start, at 0."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        values: Mapping[K, str],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self._values = dict(values)
        self.counts: dict[K, int] = dict.fromkeys(self._values, 0)
        registry.register(self)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self._name, self._documentation, labels=[self._label])
        for key, n in list(self.counts.items()):
            family.add_metric([self._values[key]], float(n))
        yield family


class LoopHistogramSeries:
    """One histogram's counts (a `LoopHistogram`'s, or one label value's in a
    `LabelledLoopHistogram`)."""

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, amount: float) -> None:
        # bisect_left: a value equal to a bound counts in that bound's bucket (le).
        self.counts[bisect_left(self._bounds, amount)] += 1
        self.total += amount

    def cumulative(self) -> tuple[list[tuple[str, float]], float]:
        """The exposition's `le` buckets (cumulative counts) and the sum."""
        counts, total = list(self.counts), self.total
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self._bounds, float("inf")), counts, strict=True):
            running += n
            le: str = floatToGoString(bound)  # type: ignore[no-untyped-call]  # untyped upstream
            buckets.append((le, running))
        return buckets, total


class LoopHistogram(Collector):
    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._series = LoopHistogramSeries(tuple(float(b) for b in buckets))
        self.observe = self._series.observe  # the series' own: no frame in between
        registry.register(self)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        buckets, total = self._series.cumulative()
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=total
        )


class LabelledLoopHistogram(Collector):
    """`LoopHistogram` with one label, for what the dispatch path observes once per
    message on the event loop (a message's wait in the queue, a submit's answer time):
    `labels(value)` returns the series to observe, as prometheus_client's does, and only
    the values asked for are exposed."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._label = label
        self._bounds = tuple(float(b) for b in buckets)
        self._series: dict[str, LoopHistogramSeries] = {}
        registry.register(self)

    def labels(self, value: str) -> LoopHistogramSeries:
        series = self._series.get(value)
        if series is None:
            series = self._series[value] = LoopHistogramSeries(self._bounds)
        return series

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=[self._label])
        for value, series in list(self._series.items()):
            buckets, total = series.cumulative()
            family.add_metric([value], buckets, sum_value=total)
        yield family


class LoopGaugeValue:
    """A gauge's value moved on the event loop only, as a plain number (a dispatched
    message's in-flight count goes up and down once each), read at scrape time through
    `Gauge.set_function`: prometheus_client's `inc`/`dec` take a lock each."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def dec(self, amount: int = 1) -> None:
        self.value -= amount

    def get(self) -> float:
        return float(self.value)
