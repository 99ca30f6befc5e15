"""Counters and histograms of one process for the request path, exposed as prometheus_client's.

An update is an addition to a plain attribute. prometheus_client's own metrics check that the
metric is observable and take a lock on every update: the three updates of a cache hit cost
about a microsecond there, a tenth of that here. These are read when scraped, through the
registry like any collector, and a scrape reads the same text (``tests/observe/
test_local_metrics.py`` compares the two). Updates come from the event loop's thread; a scrape
from another thread reads values that are at most one update old.

With several workers (PROMETHEUS_MULTIPROC_DIR), every metric stays prometheus_client's: its
values go to the shared directory (``observe/metrics.py`` picks).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString


class Increments(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class Observes(Protocol):
    def observe(self, amount: float) -> None: ...


def _created_series() -> bool:
    """Whether prometheus_client exposes ``_created`` series (it does unless
    PROMETHEUS_DISABLE_CREATED_SERIES is set): asked of an unregistered counter, so these
    metrics follow the same switch."""
    probe = Counter("probe", "A probe.", registry=None)
    return any(sample.name.endswith("_created") for m in probe.collect() for sample in m.samples)


CREATED_SERIES = _created_series()


class CounterValue:
    """One series of a counter."""

    __slots__ = ("value", "created")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class HistogramValue:
    """One series of a histogram: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "sum", "created")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        # The first bound at or above ``amount``: its bucket, as ``le`` means.
        self.counts[bisect_left(self.bounds, amount)] += 1


S = TypeVar("S", CounterValue, HistogramValue)


class _Family(Generic[S]):
    """A metric's name, help, label names and series (one, unlabelled, without label names),
    registered as a collector; ``labels(...)`` gives the series of those label values."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._series: dict[tuple[str, ...], S] = {} if labelnames else {(): self._new()}
        registry.register(self)  # type: ignore[arg-type]

    def _new(self) -> S:
        raise NotImplementedError

    def labels(self, *values: object) -> S:
        key = tuple(str(value) for value in values)
        series = self._series.get(key)
        if series is None:
            if len(key) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}, got {key}")
            series = self._series[key] = self._new()
        return series

    def _series_labels(self, values: tuple[str, ...]) -> dict[str, str]:
        return dict(zip(self.labelnames, values, strict=True))


class LocalCounter(_Family[CounterValue]):
    """A counter: ``labels(...)`` gives a series to ``inc``; without label names the counter
    is its own one series."""

    def _new(self) -> CounterValue:
        return CounterValue()

    def inc(self, amount: float = 1) -> None:
        self._series[()].inc(amount)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in list(self._series.items()):
            created = series.created if CREATED_SERIES else None
            family.add_metric(values, series.value, created=created)
        yield family


class LocalHistogram(_Family[HistogramValue]):
    """A histogram over ``buckets`` (a last ``+Inf`` bucket is added): ``labels(...)`` gives a
    series to ``observe``; without label names the histogram is its own one series."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = tuple(float(bound) for bound in buckets)
        self.bounds = bounds if bounds[-1] == float("inf") else (*bounds, float("inf"))
        super().__init__(name, documentation, labelnames, registry=registry)

    def _new(self) -> HistogramValue:
        return HistogramValue(self.bounds)

    def observe(self, amount: float) -> None:
        self._series[()].observe(amount)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        bounds = [floatToGoString(bound) for bound in self.bounds]  # type: ignore[no-untyped-call]
        for values, series in list(self._series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, list(series.counts), strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            family.add_metric(values, buckets, series.sum)
            if CREATED_SERIES:
                family.add_sample(
                    f"{self.name}_created", self._series_labels(values), series.created
                )
        yield family
