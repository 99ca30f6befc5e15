"""The tracing module's own parts: the exporter's headers, the samplers, and spans dropped
(and counted) when the export queue is full rather than a request ever waiting for it."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from prometheus_client import CollectorRegistry, Counter

from proxy.observe.tracing import CountingProcessor, parse_headers, sampler_of


class StuckExporter(SpanExporter):
    """A collector that never answers: every export waits until the test lets it go."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        return SpanExportResult.SUCCESS


def test_headers_are_key_value_pairs_url_decoded() -> None:
    assert parse_headers("x-honeycomb-team=abc%3D1, Authorization=Basic%20eA==,bad") == {
        "x-honeycomb-team": "abc=1",
        "authorization": "Basic eA==",
    }


def test_the_specifications_samplers() -> None:
    assert sampler_of("always_off", 1.0) is ALWAYS_OFF
    assert isinstance(sampler_of("traceidratio", 0.25), TraceIdRatioBased)
    assert isinstance(sampler_of("parentbased_always_on", 1.0), ParentBased)


def test_a_full_queue_drops_spans_and_counts_them_without_waiting() -> None:
    dropped = Counter("dropped", "test", registry=CollectorRegistry())
    exporter = StuckExporter()
    provider = TracerProvider()
    provider.add_span_processor(CountingProcessor(exporter, dropped, max_queue=4))
    tracer = provider.get_tracer("test")
    for index in range(40):  # far more than the queue holds while the export hangs
        tracer.start_span(f"span {index}").end()
    assert dropped._value.get() >= 30  # type: ignore[attr-defined]
    exporter.release.set()
    provider.shutdown()
