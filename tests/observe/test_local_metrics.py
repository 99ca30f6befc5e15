"""The request path's in-process metrics read, when scraped, as prometheus_client's own."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from proxy.observe.local_metrics import LocalCounter, LocalHistogram
from proxy.observe.metrics import LATENCY_BUCKETS, Metrics

# Durations on both sides of bucket bounds, on a bound itself (``le`` includes it), above
# the last finite bound, and zero.
DURATIONS = (0.0, 0.0004, 0.0005, 0.0007, 0.01, 0.3, 2.5, 59.0, 121.0, 500.0)


def _without_created(text: bytes) -> str:
    """The exposition with every ``_created`` timestamp blanked (they differ by when each
    series was made)."""
    return re.sub(r"^(\w+_created(\{[^}]*\})?) \S+$", r"\1 T", text.decode(), flags=re.M)


def _updated(counter: type, histogram: type) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    requests = counter("proxy_requests", "Requests.", ["route", "status"], registry=registry)
    unused = counter("proxy_unused", "Never updated.", ["code"], registry=registry)
    plain = counter("proxy_plain", "No labels.", registry=registry)
    by_route = histogram(
        "proxy_seconds", "By route.", ["route"], buckets=LATENCY_BUCKETS, registry=registry
    )
    overall = histogram("proxy_overall_seconds", "Overall.", buckets=(0.1, 1), registry=registry)
    empty = histogram("proxy_empty_seconds", "Never observed.", buckets=(1,), registry=registry)
    assert unused is not None and empty is not None
    for index, seconds in enumerate(DURATIONS):
        requests.labels("/api/chat", 200 if index % 3 else 429).inc()
        by_route.labels("/api/chat" if index % 2 else "/v1/chat/completions").observe(seconds)
        overall.observe(seconds)
        plain.inc(2)
    requests.labels("/healthz", 200).inc(0.5)
    return registry


def test_a_scrape_reads_the_same_text_as_prometheus_clients_own_metrics() -> None:
    theirs = _without_created(generate_latest(_updated(Counter, Histogram)))
    ours = _without_created(generate_latest(_updated(LocalCounter, LocalHistogram)))
    assert ours == theirs
    # The comparison saw every kind of line, with real values.
    assert 'proxy_seconds_bucket{le="0.0005",route="/v1/chat/completions"} 2.0' in ours
    assert 'proxy_overall_seconds_bucket{le="+Inf"} 10.0' in ours
    assert "proxy_plain_total 20.0" in ours
    assert 'proxy_requests_created{route="/healthz",status="200"} T' in ours


def test_a_series_is_made_with_its_labels_only() -> None:
    counter = LocalCounter("proxy_x", "X.", ["route", "status"], registry=CollectorRegistry())
    with pytest.raises(ValueError, match="takes labels"):
        counter.labels("/api/chat")


def test_the_gateways_request_metrics_are_local_in_one_process_and_shared_with_workers(
    tmp_path: object,
) -> None:
    alone = Metrics()
    assert isinstance(alone.requests, LocalCounter)
    assert isinstance(alone.request_seconds, LocalHistogram)
    workers = Metrics(multiprocess_dir=str(tmp_path))
    # Workers' values go through prometheus_client's files, summed at a scrape.
    assert isinstance(workers.requests, Counter)
    assert isinstance(workers.request_seconds, Histogram)
