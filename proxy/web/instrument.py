"""Observing every request: its id, ``Vary: Origin``, ``Server-Timing``, metrics and the
access-log line. ``Observer`` holds the steps; ``ObserveMiddleware`` takes them around the
routes Starlette serves, the hot routes (web/dispatch.py) in their own frame.

Pure ASGI (no BaseHTTPMiddleware) so that streamed responses pass through untouched.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.observe.access_log import NAME as ACCESS_LOGGER, AccessLog
from proxy.observe.local_metrics import Increments, Observes
from proxy.observe.metrics import Metrics
from proxy.observe.record import RequestRecord, begin

if TYPE_CHECKING:
    from proxy.observe.tracing import Tracing

logger = logging.getLogger("proxy.app")
access_logger = logging.getLogger(ACCESS_LOGGER)

_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state")
    return state.get("request_id") if isinstance(state, dict) else None


# Route labels for metrics and the access log: known paths, never raw URLs (unbounded).
ROUTES = {
    path: path
    for path in (
        "/", "/api/chat", "/api/predict", "/api/models", "/api/cache", "/v1/chat/completions",
        "/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json",
    )
}  # fmt: skip


# Methods are labelled as sent only when they are HTTP's own; anything else a client makes up
# shares one label, so it cannot add series without bound.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(path: str) -> str:
    return ROUTES.get(path) or ("/static" if path.startswith("/static/") else "other")


class Observer:
    """Observing one request, in three steps: ``begin`` (its id, its record, the in-flight
    gauge, its span), ``head`` (the headers its response's start gets) and ``end`` (metrics
    and the access line). ObserveMiddleware takes them around every route through Starlette;
    the hot routes (web/dispatch.py) take them in their own frame.

    The access log names the route, status, cache status, upstream and durations: never
    the prompt, the reply, a header value or a key.
    """

    def __init__(
        self, metrics: Metrics, *, access_log: bool, tracing: Tracing | None = None
    ) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self.access_log = access_log and access_logger.isEnabledFor(logging.INFO)
        self._access = AccessLog()
        # A random per-process prefix and a counter: unique across instances, and far
        # cheaper per request than uuid4.
        self._prefix = os.urandom(8).hex()
        # Label children by their labels: .labels() costs more than the update. Routes,
        # methods and statuses are bounded sets, so these stay small.
        self._counters: dict[tuple[str, str, int], Increments] = {}
        self._histograms: dict[str, Observes] = {}
        self._counter = itertools.count(1)

    def begin(self, scope: Scope) -> RequestRecord:
        """The record of a request that starts now (a valid incoming ``X-Request-ID`` is
        kept), made current for everything the request does."""
        started = time.perf_counter()
        request_id = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if _VALID_REQUEST_ID.match(value):
                    request_id = value
                break
        if request_id is None:
            request_id = f"{self._prefix}{next(self._counter):08x}".encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode()
        record = RequestRecord(route_label(scope["path"]), started, request_id)
        begin(record)
        if self.tracing is not None:  # off: nothing of OpenTelemetry is even imported
            record.span = self.tracing.request_started(scope, record.route)
        metrics = self.metrics
        metrics.serving += 1
        if metrics.serving_shared:
            metrics.in_flight.inc()
        return record

    @staticmethod
    def head(headers: list[tuple[bytes, bytes]], record: RequestRecord) -> tuple[bytes, bytes]:
        """Adds to a response's start headers what the record holds for it (the guard's
        ``RateLimit-*``), ``X-Request-ID``, ``Server-Timing`` and ``Vary: Origin``; returns
        the response's ``X-Cache`` and ``X-Upstream`` (``-`` where it has none)."""
        if record.headers:
            headers += record.headers
        cache = upstream = b"-"
        vary = None
        for index, (key, value) in enumerate(headers):
            if key == b"x-cache":
                cache = value
            elif key == b"x-upstream":
                upstream = value
            elif key == b"vary" and vary is None:
                vary = index
        headers.append((b"x-request-id", record.request_id))
        headers.append((b"server-timing", _server_timing(record)))
        if vary is None:
            headers.append(_VARY_ORIGIN)
        elif b"origin" not in (value := headers[vary][1]).lower():
            headers[vary] = (b"vary", value + b", Origin")
        return cache, upstream

    def end(
        self,
        scope: Scope,
        record: RequestRecord,
        status: int,
        finished: bool,
        cache: bytes,
        upstream: bytes,
    ) -> None:
        """The span, metrics and access line of a request answered with ``status``; unless
        the whole body was sent (``finished``), metrics and the log say 499, the client left
        before the answer was whole (nginx's code)."""
        tracing = self.tracing
        span = record.span
        if span is not None:
            tracing.request_ended(span[0], span[1], status, record)  # type: ignore[union-attr]
        if not finished:
            status = 499
        metrics = self.metrics
        metrics.serving -= 1
        if metrics.serving_shared:
            metrics.in_flight.dec()
        elapsed = time.perf_counter() - record.started
        upstream_seconds = record.upstream_seconds
        method = scope["method"]
        if method not in METHODS:
            method = "other"
        counter = self._counters.get((record.route, method, status))
        if counter is None:
            counter = metrics.requests.labels(record.route, method, status)
            self._counters[(record.route, method, status)] = counter
        counter.inc()
        histogram = self._histograms.get(record.route)
        if histogram is None:
            histogram = self._histograms[record.route] = metrics.request_seconds.labels(
                record.route
            )
        histogram.observe(elapsed)
        if upstream_seconds is not None:
            metrics.overhead_seconds.observe(max(0.0, elapsed - upstream_seconds))
        if self.access_log:
            self._access.write(
                record.request_id.decode(),
                scope["method"],
                record.route,
                status,
                elapsed,
                record.cache or cache.decode(),
                ", ".join(record.upstreams) if record.upstreams else upstream.decode(),
                tracing.trace_id(span[0]) if span is not None else None,  # type: ignore[union-attr]
                upstream_seconds,
            )


class ObserveMiddleware:
    """Every request through Starlette observed (``Observer``): an id on the response,
    ``Vary: Origin`` so shared caches never mix CORS answers, ``Server-Timing`` with the
    gateway's and the upstream's time, Prometheus metrics and one access-log line.
    """

    def __init__(self, app: ASGIApp, *, observer: Observer) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        observer = self.observer
        record = observer.begin(scope)
        status = 499  # the client left before an answer
        cache = upstream = b"-"
        finished = False  # the whole body was sent

        async def observing_send(message: Message) -> None:
            nonlocal status, cache, upstream, finished
            if message["type"] == "http.response.body":
                finished = not message.get("more_body", False)
            elif message["type"] == "http.response.start":
                status = message["status"]
                record.responded = True
                headers = list(message.get("headers", ()))
                cache, upstream = observer.head(headers, record)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            observer.end(scope, record, status, finished, cache, upstream)


def _server_timing(record: RequestRecord) -> bytes:
    elapsed = time.perf_counter() - record.started
    upstream = record.upstream_seconds
    if upstream is None:
        timing = f"gateway;dur={elapsed * 1000:.2f}"
    else:
        own = max(0.0, elapsed - upstream)
        timing = f"gateway;dur={own * 1000:.2f}, upstream;dur={upstream * 1000:.2f}"
    if record.attempts:  # with several upstreams, every attempt so far, in order
        timing += "".join(
            f', attempt;desc="{name} {outcome}";dur={seconds * 1000:.2f}'
            for name, outcome, seconds in record.attempts
        )
    return timing.encode()


_VARY_ORIGIN = (b"vary", b"Origin")
