"""OpenTelemetry traces over OTLP/HTTP, one trace per request, its parts as spans.

Imported only when OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT) is set: with tracing
off nothing of OpenTelemetry is loaded, and the request path only tests for None. Spans are
exported in batches from the SDK's own thread, from a bounded queue; a span that finds the
queue full is dropped and counted (``proxy_trace_spans_dropped_total``), so a collector that
is down, slow or refusing never slows or fails a request. No prompt or reply text, token, key
or ``Authorization`` value is ever an attribute, unless TRACE_CONTENT asks for the text (a
development setting), and then redacted of the gateway's secrets.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote

from opentelemetry import context as otel_context, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import Counter

from proxy._version import __version__
from proxy.observe.record import current_record, served_model
from proxy.observe.redaction import Redactor

# The queue of finished spans waiting for export, the wait before a batch goes, and how long
# one export (and the flush at shutdown) may take.
MAX_QUEUE = 2048
SCHEDULE_DELAY_MS = 1000
EXPORT_TIMEOUT_S = 5.0
SHUTDOWN_TIMEOUT_S = 3.0
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def parse_headers(raw: str) -> dict[str, str]:
    """OTEL_EXPORTER_OTLP_HEADERS: ``key=value`` pairs, comma-separated, values URL-encoded."""
    found = {}
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            found[key.strip().lower()] = unquote(value.strip())
    return found


def sampler_of(name: str, ratio: float) -> Sampler:
    root: Sampler = {"always_on": ALWAYS_ON, "always_off": ALWAYS_OFF}.get(
        name.removeprefix("parentbased_"), TraceIdRatioBased(ratio)
    )
    return ParentBased(root) if name.startswith("parentbased_") else root


class CountingProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans it drops because its queue is full."""

    def __init__(
        self, exporter: SpanExporter, dropped: Counter, max_queue: int = MAX_QUEUE
    ) -> None:
        super().__init__(
            exporter,
            max_queue_size=max_queue,
            schedule_delay_millis=SCHEDULE_DELAY_MS,
            max_export_batch_size=min(512, max_queue),
            export_timeout_millis=int(EXPORT_TIMEOUT_S * 1000),
        )
        self._dropped = dropped
        self._max_queue = max_queue

    def on_end(self, span: ReadableSpan) -> None:
        queue = getattr(getattr(self, "_batch_processor", None), "_queue", None)
        if queue is not None and len(queue) >= self._max_queue:
            self._dropped.inc()
        super().on_end(span)


class Tracing:
    """The gateway's tracer, its propagator and the exporter behind them."""

    def __init__(
        self,
        endpoint: str,
        *,
        headers: str | None,
        service: str,
        sampler: str,
        ratio: float,
        content: bool,
        secrets: tuple[str, ...],
        dropped: Counter,
    ) -> None:
        exporter = OTLPSpanExporter(
            endpoint=endpoint,
            headers=parse_headers(headers) if headers else None,
            timeout=EXPORT_TIMEOUT_S,
        )
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": service, "service.version": __version__}),
            sampler=sampler_of(sampler, ratio),
        )
        self._provider.add_span_processor(CountingProcessor(exporter, dropped))
        self.tracer = self._provider.get_tracer("proxy", __version__)
        self._propagator = TraceContextTextMapPropagator()
        self.content = content
        self._redactor = Redactor(secrets)

    def request_started(self, scope: Any, route: str) -> tuple[Span, object]:
        """The request's span (SERVER), continuing an incoming ``traceparent``, made current
        for everything the request does."""
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope["headers"]
            if key in (b"traceparent", b"tracestate")
        }
        method = scope["method"]
        if method not in _METHODS:
            method = "_OTHER"
        span = self.tracer.start_span(
            f"{method} {route}",
            context=self.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route},
        )
        return span, otel_context.attach(trace.set_span_in_context(span))

    def request_ended(self, span: Span, token: object, status: int, record: Any) -> None:
        span.set_attribute("http.response.status_code", status)
        if record.cache:
            span.set_attribute("proxy.cache", record.cache)
        if record.caller:
            span.set_attribute("proxy.caller", record.caller)
        if record.upstreams:
            span.set_attribute("proxy.upstreams", list(record.upstreams))
        if status >= 500:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        otel_context.detach(token)  # type: ignore[arg-type]

    @staticmethod
    def trace_id(span: Span) -> str | None:
        context = span.get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None

    def extract(self, carrier: Mapping[str, str]) -> otel_context.Context:
        """The context an incoming ``traceparent`` continues (a new trace without one)."""
        return self._propagator.extract(carrier)

    def inject(self, headers: Any) -> None:
        """The current span's ``traceparent`` (and ``tracestate``) into ``headers``."""
        self._propagator.inject(headers)

    def start(self, name: str, *, kind: SpanKind = SpanKind.INTERNAL, **attributes: Any) -> Span:
        """A span, child of the current one, not made current."""
        return self.tracer.start_span(name, kind=kind, attributes=_clean(attributes))

    @contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[Span]:
        """A span around a block, current inside it; an exception ends it with an error."""
        with self.tracer.start_as_current_span(
            name,
            attributes=_clean(attributes),
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                failed(span, exc)
                raise

    def text(self, span: Span, key: str, value: str) -> None:
        """Prompt or reply text, only when TRACE_CONTENT is on, redacted."""
        if self.content:
            span.set_attribute(key, self._redactor(value)[:8000])

    def shutdown(self) -> None:
        """Flush what is queued and stop, within SHUTDOWN_TIMEOUT_S whatever the collector
        does (the SDK's own shutdown waits for a hung export)."""
        done = threading.Thread(target=self._provider.shutdown, daemon=True)
        done.start()
        done.join(SHUTDOWN_TIMEOUT_S)


def failed(span: Span, exc: BaseException) -> None:
    """End-of-span status for a failure: the gateway's code, never a message with text."""
    code = getattr(exc, "code", None) or type(exc).__name__
    span.set_attribute("error.type", str(code))
    span.set_status(Status(StatusCode.ERROR, str(code)))


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("__", "."): v for k, v in attributes.items() if v is not None}


class Attempts:
    """Each call to one upstream as a span of its own (CLIENT, GenAI attributes), current
    while the call runs, so that the HTTP requests it makes carry its ``traceparent``."""

    def __init__(self, tracing: Tracing, label: str, kind: str) -> None:
        self._tracing = tracing
        self._label = label
        self._kind = kind

    def _start(self, req: Any) -> Span:
        record = current_record()
        number = len(record.attempts or ()) + 1 if record is not None else 1
        continuing = bool(req.prefill) or bool(record is not None and record.upstreams)
        span = self._tracing.tracer.start_span(
            f"chat {req.model.name}",
            kind=SpanKind.CLIENT,
            attributes=_clean(
                {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": self._kind,
                    "gen_ai.request.model": req.model.name,
                    "gen_ai.request.max_tokens": req.max_new_tokens,
                    "gen_ai.request.temperature": req.temperature,
                    "gen_ai.request.top_p": req.top_p,
                    "proxy.upstream": self._label,
                    "proxy.upstream.kind": self._kind,
                    "proxy.attempt": number,
                    "proxy.continuation": continuing,
                }
            ),
        )
        self._tracing.text(span, "gen_ai.prompt", req.prompt)
        return span

    def _finish(
        self, span: Span, req: Any, text: str, model: str, finish: str | None, usage: Any
    ) -> None:
        if usage is not None:
            tokens_in, tokens_out = usage.prompt_tokens, usage.completion_tokens
        else:  # the gateway's estimate, as its usage reports it: four characters a token
            tokens_in, tokens_out = -(-len(req.prompt) // 4), -(-len(text) // 4)
        span.set_attribute("gen_ai.response.model", model)
        span.set_attribute("gen_ai.usage.input_tokens", tokens_in)
        span.set_attribute("gen_ai.usage.output_tokens", tokens_out)
        span.set_attribute("gen_ai.response.finish_reasons", [finish or "stop"])
        span.set_attribute("proxy.outcome", "ok")
        self._tracing.text(span, "gen_ai.completion", text)

    async def generate(self, req: Any, call: Callable[[], Awaitable[Any]]) -> Any:
        span = self._start(req)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            generation = await call()
        except BaseException as exc:
            _ended_by(span, exc)
            raise
        else:
            model = served_model(generation.model)
            self._finish(span, req, generation.text, model, generation.finish_reason,
                         generation.usage)  # fmt: skip
            return generation
        finally:
            otel_context.detach(token)
            span.end()

    async def stream(
        self, req: Any, chunks: AsyncGenerator[Any, None]
    ) -> AsyncGenerator[Any, None]:
        span = self._start(req)
        context = trace.set_span_in_context(span)
        started = time.perf_counter()
        text, finish, usage, first = "", None, None, True
        try:
            while True:
                token = otel_context.attach(context)  # current for this step of the call only
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                finally:
                    otel_context.detach(token)
                if first:
                    first = False
                    ttft = (time.perf_counter() - started) * 1000
                    span.set_attribute("proxy.time_to_first_token_ms", round(ttft, 2))
                text = chunk.text if chunk.replace else text + chunk.text
                finish = chunk.finish_reason or finish
                usage = chunk.usage or usage
                yield chunk
        except BaseException as exc:
            _ended_by(span, exc)
            raise
        else:
            self._finish(span, req, text, served_model(req.model.name), finish, usage)
        finally:
            await chunks.aclose()
            span.end()


def _ended_by(span: Span, exc: BaseException) -> None:
    if isinstance(exc, GeneratorExit | asyncio.CancelledError):
        span.set_attribute("proxy.outcome", "cancelled")  # the client left: no error of ours
        return
    failed(span, exc)
    span.set_attribute("proxy.outcome", str(getattr(exc, "code", None) or "error"))
