"""Prometheus metrics of one app, on a registry of its own (several apps can share a process).

With several workers (PROMETHEUS_MULTIPROC_DIR set), each worker writes its values to that
directory and a scrape, whichever worker answers it, reports the sum over all of them. In one
process, the metrics every request updates are plain in-process values read when scraped
(``local_metrics.py``): the same text for a fraction of the cost per update.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from proxy.observe.local_metrics import LocalCounter, LocalHistogram

# Seconds: from well under a millisecond (cache hits) to minutes (long generations).
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
)  # fmt: skip


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, *, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = registry = CollectorRegistry(auto_describe=True)
        # Updated by every request: in one process, plain values read when scraped.
        shared = multiprocess_dir is not None
        counter = Counter if shared else LocalCounter
        histogram = Histogram if shared else LocalHistogram
        self.requests = counter(
            "proxy_requests", "Requests by route, method and status.",
            ["route", "method", "status"], registry=registry,
        )  # fmt: skip
        self.request_seconds = histogram(
            "proxy_request_duration_seconds", "Time to the end of the response, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.overhead_seconds = histogram(
            "proxy_gateway_overhead_seconds",
            "The gateway's own time per request: total minus the upstream's.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.upstream_seconds = histogram(
            "proxy_upstream_duration_seconds", "Duration of upstream calls.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.time_to_first_token = histogram(
            "proxy_time_to_first_token_seconds", "Upstream time to the first streamed chunk.",
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.upstream_errors = Counter(
            "proxy_upstream_errors", "Failed upstream calls by error code.", ["code"],
            registry=registry,
        )  # fmt: skip
        self.rate_limited = Counter(
            "proxy_rate_limited", "Requests refused by the per-client rate limit.",
            registry=registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "proxy_in_flight_requests",
            "Requests being served now.",
            registry=registry,
            multiprocess_mode="livesum",  # the workers alive now, added up
        )
        # Requests being served now by this process. In one process the gauge reads it when
        # scraped (no locked update per request); workers share theirs through the gauge.
        self.serving = 0
        self.serving_shared = shared
        if not self.serving_shared:
            self.in_flight.set_function(lambda: self.serving)
        self.cache_requests = counter(
            "proxy_cache_requests",
            "Generation requests by cache outcome.",
            ["result"],
            registry=registry,
        )
        # Label children resolved once: .labels() costs more than the increment itself.
        self.cache_result = {
            result: self.cache_requests.labels(result)
            for result in ("hit", "miss", "bypass", "joined")
        }
        self.flight_joins = Counter(
            "proxy_flight_joins",
            "Requests served by an identical generation already in flight, by where it ran "
            "(process: this one; redis: another instance's, followed through Redis).",
            ["via"],
            registry=registry,
        )
        self.cache_backend_errors = Counter(
            "proxy_cache_backend_errors",
            "Cache backend calls that failed (requests were served uncached).",
            ["backend"],
            registry=registry,
        )
        self.trace_spans_dropped = Counter(
            "proxy_trace_spans_dropped",
            "Finished spans dropped because the export queue was full (tracing on).",
            registry=registry,
        )
        self._routing: RoutingMetrics | None = None

    def routing(self) -> RoutingMetrics:
        """The per-upstream metrics of UPSTREAMS_FILE, registered on first use."""
        if self._routing is None:
            self._routing = RoutingMetrics(self.registry)
        return self._routing

    def exposition(self) -> bytes:
        """The text a scrape gets: this process's metrics, or every worker's summed."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def close(self) -> None:
        """This worker is gone: its live gauges no longer count in the sum."""
        if self.multiprocess_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)  # type: ignore[no-untyped-call]


UPSTREAM_STATES = ("ready", "cold", "cooling", "open")


class RoutingMetrics:
    """Per upstream of UPSTREAMS_FILE: calls, failures by code, failovers away from it,
    continuations it took over, restarts it answered, and its state (1 for the current
    one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "proxy_upstream_calls", "Calls to each upstream.", ["upstream"], registry=registry
        )
        self.failures = Counter(
            "proxy_upstream_failures", "Failed calls to each upstream, by error code.",
            ["upstream", "code"], registry=registry,
        )  # fmt: skip
        self.failovers = Counter(
            "proxy_upstream_failovers",
            "Requests moved to another upstream after this one failed before any output.",
            ["upstream"], registry=registry,
        )  # fmt: skip
        self.continuations = Counter(
            "proxy_upstream_continuations",
            "Broken streams this upstream continued after another one's output.",
            ["upstream"], registry=registry,
        )  # fmt: skip
        self.restarts = Counter(
            "proxy_upstream_restarts",
            "Broken streams this upstream answered again from the prompt (nothing could "
            "continue them).",
            ["upstream"], registry=registry,
        )  # fmt: skip
        self.state = Gauge(
            "proxy_upstream_state", "Each upstream's state: 1 for the current one.",
            ["upstream", "state"], registry=registry, multiprocess_mode="livemax",
        )  # fmt: skip

    def set_state(self, upstream: str, state: str) -> None:
        for name in UPSTREAM_STATES:
            self.state.labels(upstream, name).set(1 if name == state else 0)
