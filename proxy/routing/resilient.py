"""The upstream as the gateway uses it: behind a circuit breaker per model (one server may
serve several, and one failing model must not lock out the others) and a bound on concurrent
calls, timed for metrics and ``Server-Timing``, its failures explained by the Hub when the
upstream is a Space."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from functools import partial
from typing import TYPE_CHECKING

from proxy.core.generation import Chunk, Generation, GenerationRequest
from proxy.core.upstream import Readiness, Upstream
from proxy.errors import (
    GatewayBusy,
    GatewayError,
    UpstreamUnavailable,
)
from proxy.observe.metrics import Metrics
from proxy.observe.record import current_record
from proxy.routing.breaker import CircuitBreaker

if TYPE_CHECKING:
    from proxy.observe.tracing import Attempts
    from proxy.upstreams.hub import SpaceStage


class ResilientUpstream:
    """Wraps an adapter; implements the same Upstream protocol."""

    def __init__(
        self,
        inner: Upstream,
        *,
        breaker: CircuitBreaker,
        max_concurrency: int,
        queue_timeout: float,
        metrics: Metrics,
        stage: SpaceStage | None = None,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.identity = inner.identity
        self.breaker = breaker  # the first model's; the others get fresh ones like it
        self._breakers: dict[str, CircuitBreaker] = {}
        self._slots = asyncio.Semaphore(max_concurrency)
        self._queue_timeout = queue_timeout
        self._metrics = metrics
        self._stage = stage
        self.attempts: Attempts | None = None  # set when tracing is on: a span per call

    async def _take_slot(self) -> None:
        """One of MAX_CONCURRENCY upstream calls (``_slots.release()`` gives it back); waits
        up to QUEUE_TIMEOUT for it. A call and a ``finally``, not a context manager: this is
        on every generation's path, and a generator-based one costs several times more."""
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            async with asyncio.timeout(self._queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise GatewayBusy(
                "the gateway is at its limit of concurrent generations; retry shortly",
                retry_after=max(1, round(self._queue_timeout)),
            ) from None

    def breaker_for(self, model: str) -> CircuitBreaker:
        breaker = self._breakers.get(model)
        if breaker is None:
            breaker = self.breaker if not self._breakers else self.breaker.fresh()
            self._breakers[model] = breaker
        return breaker

    async def _failed(
        self, error: GatewayError, probe: bool, breaker: CircuitBreaker
    ) -> GatewayError:
        """Count ``error``; an unavailability opens the circuit in time. The error to raise."""
        if isinstance(error, GatewayBusy):  # ours, before any call: no verdict on the upstream
            if probe:
                breaker.release()
            return error
        if error.replayed:  # an earlier call's failure raised again: counted already
            if probe:
                breaker.release()
        else:
            self._metrics.upstream_errors.labels(error.code).inc()
            if error.unavailable:
                breaker.failure()
            else:
                breaker.success()  # it answered, if only to refuse: it is up
        if self._stage is not None and error.cold_start_symptom:
            return await self._stage.explain(error)
        return error

    async def generate(self, req: GenerationRequest) -> Generation:
        if self.attempts is not None:
            generation: Generation = await self.attempts.generate(req, partial(self._generate, req))
            return generation
        return await self._generate(req)

    def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        if self.attempts is not None:
            return self.attempts.stream(req, self._stream(req))
        return self._stream(req)

    async def _generate(self, req: GenerationRequest) -> Generation:
        breaker = self.breaker_for(req.model.name)
        probe = breaker.admit()
        record = current_record()
        try:
            await self._take_slot()
            started = time.perf_counter()
            try:
                generation = await self.inner.generate(req)
            finally:
                self._slots.release()
                elapsed = time.perf_counter() - started
                self._metrics.upstream_seconds.observe(elapsed)
                if record is not None:
                    record.upstream_seconds = elapsed
        except GatewayError as exc:
            error = await self._failed(exc, probe, breaker)
            if error is exc:
                raise
            raise error from None
        except BaseException:
            if probe:
                breaker.release()
            raise
        breaker.success()
        return generation

    async def _stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        breaker = self.breaker_for(req.model.name)
        probe = breaker.admit()
        record = current_record()
        first = True
        try:
            await self._take_slot()
            try:
                started = time.perf_counter()
                chunks = self.inner.stream(req)
                try:
                    async for chunk in chunks:
                        if first:
                            first = False
                            elapsed = time.perf_counter() - started
                            self._metrics.time_to_first_token.observe(elapsed)
                            if record is not None:
                                record.upstream_seconds = elapsed
                        yield chunk
                finally:
                    await chunks.aclose()
                    elapsed = time.perf_counter() - started
                    self._metrics.upstream_seconds.observe(elapsed)
                    if record is not None:  # the whole stream, for the overhead metric
                        record.upstream_seconds = elapsed
            finally:
                self._slots.release()
        except GatewayError as exc:
            error = await self._failed(exc, probe, breaker)
            if error is exc:
                raise
            raise error from None
        except BaseException:
            if probe:
                breaker.release()
            raise
        breaker.success()

    async def ready(self) -> Readiness:
        # Unready while every model's circuit is open; one model up is a served upstream.
        breakers = list(self._breakers.values()) or [self.breaker]
        if all(b.state == "open" for b in breakers):
            breaker = breakers[0]
            try:
                breaker.admit()
            except UpstreamUnavailable as exc:
                return Readiness(False, exc.message, exc)
            breaker.release()  # cooled down: the next real call is the probe
        readiness = await self.inner.ready()
        if readiness.ready or readiness.error is None or self._stage is None:
            return readiness
        error = await self._stage.explain(readiness.error)
        return Readiness(False, error.message, error)

    async def probe(self) -> Readiness:
        readiness = await self.inner.probe()
        if readiness.ready or readiness.error is None or self._stage is None:
            return readiness
        error = await self._stage.explain(readiness.error)
        return Readiness(False, error.message, error)

    def blocked(self, model: str) -> bool:
        """Whether ``model``'s circuit is open and admits no probe now."""
        breaker = self._breakers.get(model)
        return breaker is not None and breaker.blocked()

    def open_models(self) -> list[str]:
        """The models whose circuit is open now."""
        return [model for model, breaker in self._breakers.items() if breaker.blocked()]

    def retry_after(self, model: str) -> int:
        breaker = self._breakers.get(model)
        return breaker.retry_after() if breaker is not None else 0

    @property
    def in_use(self) -> bool:
        """Whether every one of its MAX_CONCURRENCY slots is taken."""
        return self._slots.locked()

    async def start(self) -> None:
        await self.inner.start()

    async def aclose(self) -> None:
        await self.inner.aclose()
        if self._stage is not None:
            await self._stage.aclose()
