"""Prometheus metrics of one app, on a registry of its own (several apps can share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.cache_requests = Counter(
            "proxy_cache_requests",
            "Generation requests by cache outcome.",
            ["result"],
            registry=self.registry,
        )
        # Label children resolved once: .labels() costs more than the increment itself.
        self.cache_result = {
            result: self.cache_requests.labels(result) for result in ("hit", "miss", "bypass")
        }
        self.cache_backend_errors = Counter(
            "proxy_cache_backend_errors",
            "Cache backend calls that failed (requests were served uncached).",
            ["backend"],
            registry=self.registry,
        )
