"""The gateway core: turns a GenerationRequest into a reply, from the cache or the upstream.

It knows nothing of HTTP; routes call it with validated values and a cache policy and render
what it returns. Identical concurrent misses share one upstream call, JSON or streamed,
whichever came first: in process through ``Flights`` and ``StreamFlights``, across instances
through the cache backend's lock and, for streams, its channel (``shared_flights.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, cast, get_args

from msgspec.structs import replace

from proxy.core.budget import bound_generation, bound_stream, budget_chars
from proxy.core.cache import (
    CacheBackend,
    CachedGeneration,
    CachePolicy,
    CacheUnavailable,
    MemoryCache,
    SharedCache,
    cache_key,
)
from proxy.core.flights import Flights
from proxy.core.generation import Chunk, FinishReason, Generation, GenerationRequest
from proxy.core.leaks import LeakCheck
from proxy.core.served import CacheStatus, Served, ServedStream
from proxy.core.shared_flights import shared_source
from proxy.core.shared_locks import entry_of_other, lock_kept
from proxy.core.stops import stop_generation, stop_stream
from proxy.core.stream_flights import StreamFlight, StreamFlights, rebuilt
from proxy.core.streams import primed, replayed
from proxy.core.upstream import Readiness, Upstream
from proxy.errors import GatewayError
from proxy.observe.metrics import Metrics
from proxy.observe.record import current_record, note_served_model, served_by, served_model
from proxy.observe.redaction import Redactor

if TYPE_CHECKING:
    from proxy.observe.tracing import Tracing

logger = logging.getLogger("proxy.gateway")

# Cache trouble is logged at most this often, however many requests it affects.
WARN_INTERVAL = 30.0
FALLBACK_LABEL = "mock-fallback"


class Gateway:
    """One upstream and an optional cache."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        cache: CacheBackend | None,
        metrics: Metrics,
        lock_timeout: float = 15.0,
        flight_timeout: float = 120.0,
        fallback: Upstream | None = None,
        secrets: Redactor | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.upstream = upstream
        # A reply that carries one of the gateway's own secrets is refused (leaks.py).
        self._leaks = LeakCheck.of(secrets)
        self.fallback = fallback
        self.cache = cache
        # An in-process cache read without a span is looked up in the caller's own step (a
        # hit has nothing to wait for); anything else takes the whole path.
        self._memory = cache if isinstance(cache, MemoryCache) and tracing is None else None
        self.metrics = metrics
        self._results = {
            status: metrics.cache_result[status.lower()] for status in get_args(CacheStatus)
        }
        self._lock_timeout = lock_timeout
        self._flight_timeout = flight_timeout
        self._tracing = tracing
        self._flights: Flights[Served] = Flights()
        self._streams = StreamFlights()
        self._warned_at = -WARN_INTERVAL

    @property
    def upstream_name(self) -> str:
        return self.upstream.name

    def _cache_failed(self, exc: CacheUnavailable) -> None:
        assert self.cache is not None
        self.metrics.cache_backend_errors.labels(self.cache.name).inc()
        now = time.monotonic()
        if now - self._warned_at >= WARN_INTERVAL:
            self._warned_at = now
            logger.warning("cache unavailable, serving uncached: %s", exc)

    def _count(self, status: CacheStatus) -> None:
        self._results[status].inc()
        record = current_record()
        if record is not None:
            record.cache = status

    async def _store(self, key: str, generation: Generation) -> None:
        """Store ``generation`` under ``key``; raises CacheUnavailable."""
        assert self.cache is not None
        if self._tracing is None:
            await self.cache.set(key, CachedGeneration.of(generation))
            return
        with self._tracing.span("cache store", proxy__cache__backend=self.cache.name):
            await self.cache.set(key, CachedGeneration.of(generation))

    async def _lookup(self, key: str, policy: CachePolicy) -> CachedGeneration | None:
        """A usable entry for ``key``; raises CacheUnavailable."""
        if self._tracing is None:
            return await self._usable(key, policy)
        assert self.cache is not None
        with self._tracing.span("cache lookup", proxy__cache__backend=self.cache.name) as span:
            entry = await self._usable(key, policy)
            span.set_attribute("proxy.cache.hit", entry is not None)
            return entry

    async def _usable(self, key: str, policy: CachePolicy) -> CachedGeneration | None:
        assert self.cache is not None
        entry = await self.cache.get(key)
        if entry is None or not policy.allows(entry.age()):
            return None
        return entry

    def key_of(self, req: GenerationRequest) -> str | None:
        """``req``'s cache key (None without a cache), for a caller that keeps requests."""
        return cache_key(req, self.upstream.identity) if self.cache is not None else None

    async def generate(
        self, req: GenerationRequest, policy: CachePolicy, *, key: str | None = None
    ) -> Served:
        """The reply for ``req`` (whose cache key is ``key`` when given); raises GatewayError
        subclasses on upstream trouble."""
        looked = self._memory is not None
        served = self._memory_hit(req, policy, key) if looked else None
        if served is None:
            try:
                served = await self._serve(req, policy, key, looked=looked)
            except GatewayError as exc:
                if self.fallback is None or not exc.unavailable:
                    raise
                generation = await self.fallback.generate(req)
                served = Served(replace(generation, upstream=FALLBACK_LABEL), "BYPASS")
        self._count(served.cache)
        if req.stop:
            served = Served(
                stop_generation(served.generation, req.stop), served.cache, served.age, served.entry
            )
        return served

    def _memory_hit(
        self, req: GenerationRequest, policy: CachePolicy, key: str | None
    ) -> Served | None:
        """A hit from the in-process cache, as ``_serve`` would answer it, or None."""
        assert self._memory is not None
        found = self._memory.usable(key or cache_key(req, self.upstream.identity), policy)
        return None if found is None else Served(found[0].generation(), "HIT", found[1], found[0])

    def kept_hit(self, key: str | None, policy: CachePolicy, entry: CachedGeneration) -> int | None:
        """The age of ``entry`` when it is still the in-process cache's usable entry for
        ``key``, counted as a hit (a caller that kept its answer sends that again); else
        None, and nothing counted."""
        if key is None or self._memory is None:
            return None
        found = self._memory.usable(key, policy)
        if found is None or found[0] is not entry:
            return None
        self._count("HIT")
        return found[1]

    async def _consult(
        self, req: GenerationRequest, policy: CachePolicy, key: str | None, looked: bool = False
    ) -> tuple[str | None, CachedGeneration | None]:
        """The cache key to fill (None: bypass the cache) and a usable entry, if any (none
        when the caller ``looked`` in the in-process cache already)."""
        if self.cache is None or not policy.write:
            return None, None
        if key is None:
            key = cache_key(req, self.upstream.identity)
        if not policy.read or looked:
            return key, None
        try:
            return key, await self._lookup(key, policy)
        except CacheUnavailable as exc:
            self._cache_failed(exc)
            return None, None

    async def _serve(
        self, req: GenerationRequest, policy: CachePolicy, known: str | None, looked: bool
    ) -> Served:
        key, entry = await self._consult(req, policy, known, looked)
        if entry is not None:
            return Served(entry.generation(), "HIT", entry.age())
        if key is None:
            return Served(await self._generate(req), "BYPASS")
        flight = self._streams.get(key)
        if flight is not None:  # an identical stream is being generated: its whole text
            self.metrics.flight_joins.labels("process").inc()
            outcome = await flight.outcome()
            if outcome.error is not None:
                raise rebuilt(outcome.error)
            generation = Generation(
                outcome.text,
                served_model(req.model.name),
                served_by(self.upstream.name),
                outcome.finish,
                outcome.usage,
            )
            return Served(generation, "JOINED")
        served, joined = await self._flights.run(key, lambda: self._fill(key, req))
        if joined:
            self.metrics.flight_joins.labels("process").inc()
            return Served(served.generation, "JOINED")
        return served

    async def _fill(self, key: str, req: GenerationRequest) -> Served:
        """Generate ``req`` once across instances and store it; the single-flight leader."""
        assert self.cache is not None
        if not self.cache.shared:  # in-process single-flight is all the coordination needed
            generation = await self._generate(req)
            await self._store(key, generation)
            return Served(generation, "MISS")
        try:
            token = await self.cache.lock(key)
            if token is None:
                # Bounded by the generation's own bound: a live leader renews its lock.
                entry = await entry_of_other(self.cache, key, timeout=self._flight_timeout)
                if entry is not None:
                    return Served(entry.generation(), "HIT", entry.age())
                token = await self.cache.lock(key)
        except CacheUnavailable as exc:
            self._cache_failed(exc)
            return Served(await self._generate(req), "BYPASS")
        try:
            if token is None:  # another instance took the lock again: generate regardless
                generation = await self._generate(req)
            else:
                async with lock_kept(
                    cast(SharedCache, self.cache),
                    key,
                    token,
                    ttl=self._lock_timeout,
                    on_failure=self._cache_failed,
                ):
                    generation = await self._generate(req)
            try:
                await self._store(key, generation)
            except CacheUnavailable as exc:
                self._cache_failed(exc)
                return Served(generation, "BYPASS")
            return Served(generation, "MISS")
        finally:
            if token is not None:
                await self.cache.unlock(key, token)

    async def stream(
        self, req: GenerationRequest, policy: CachePolicy, *, key: str | None = None
    ) -> ServedStream:
        """Chunks: a cached reply replayed, or the upstream's stream, stored when complete
        (``key`` as for ``generate``). Close the iterator to cancel the upstream call."""
        served, flight = await self._open_stream(req, policy, key)
        if req.stop:
            served.chunks = stop_stream(served.chunks, req.stop)
        try:
            served.chunks = await primed(served.chunks)
            record = current_record()
            if served.cache != "HIT" and record is not None and record.upstreams:
                served.upstream = record.upstreams[0]  # a router's: the one that answered
            if flight is not None and flight.remote:  # another instance generates it
                served.cache = "JOINED"
                self.metrics.flight_joins.labels("redis").inc()
        except GatewayError as exc:
            if self.fallback is None or not exc.unavailable:
                raise
            # Nothing was sent yet: the whole reply can still come from the fallback.
            chunks = self.fallback.stream(req)
            if req.stop:
                chunks = stop_stream(chunks, req.stop)
            return ServedStream(await primed(chunks), "BYPASS", upstream=FALLBACK_LABEL)
        finally:
            if flight is not None:
                self._count(served.cache)
        return served

    async def _open_stream(
        self, req: GenerationRequest, policy: CachePolicy, known: str | None
    ) -> tuple[ServedStream, StreamFlight | None]:
        """The stream for ``req``, and the flight this request started (counted once it is
        known whether it generates or follows another instance)."""
        key, entry = await self._consult(req, policy, known)
        if entry is not None:
            self._count("HIT")
            note_served_model(entry.model)
            return ServedStream(replayed(entry), "HIT", entry.age(), entry.upstream), None
        name = self.upstream.name
        if key is None:
            self._count("BYPASS")
            return ServedStream(self._stream_and_store(req, None), "BYPASS", upstream=name), None
        # A stream that cannot take text back (a restarted answer's replace) shares only the
        # flights of its kind; the cache entry they fill is the same.
        flight_key = key if req.rewritable else f"{key}:forward-only"
        flight = self._streams.get(flight_key)
        if flight is not None:
            self._count("JOINED")
            self.metrics.flight_joins.labels("process").inc()
            return ServedStream(flight.listen(), "JOINED", upstream=name), None
        if self._flights.running(key):  # an identical JSON request is being answered
            self._count("JOINED")
            self.metrics.flight_joins.labels("process").inc()
            return ServedStream(self._after_json(req, key), "JOINED", upstream=name), None
        flight = self._streams.begin(flight_key, self._flight_source(req, key, flight_key))
        return ServedStream(flight.listen(), "MISS", upstream=name), flight

    async def _after_json(self, req: GenerationRequest, key: str) -> AsyncGenerator[Chunk, None]:
        """The reply of the identical JSON request in flight, as a stream; if its leader
        left, this stream generates it."""
        served = await self._flights.join(key)
        if served is None:
            async for chunk in self._stream_and_store(req, key):
                yield chunk
            return
        generation = served.generation
        async for chunk in replayed(CachedGeneration.of(generation)):
            yield chunk

    def _flight_source(
        self, req: GenerationRequest, key: str, flight_key: str
    ) -> AsyncGenerator[Chunk, None]:
        """What a new flight runs: the upstream's stream, stored when complete; with a shared
        cache, published to the other instances, or followed when another one generates."""
        cache = self.cache
        if cache is None or not cache.shared:
            return self._stream_and_store(req, key)
        return shared_source(
            cast(SharedCache, cache),
            flight_key,
            self._streams,
            generate=lambda: self._stream_and_store(req, key),
            timeout=self._flight_timeout,
            on_failure=self._cache_failed,
        )

    async def _stream_and_store(
        self, req: GenerationRequest, key: str | None
    ) -> AsyncGenerator[Chunk, None]:
        text = ""
        finish: FinishReason = "stop"
        chunks = bound_stream(self.upstream.stream(req), budget_chars(req))
        leaks = self._leaks
        try:
            async for chunk in chunks:
                text = chunk.text if chunk.replace else text + chunk.text
                if leaks is not None:
                    leaks.tail(text, len(chunk.text))
                finish = chunk.finish_reason or finish
                yield chunk
        finally:
            await chunks.aclose()
        # Only a stream that completed gets here: errors and disconnects raise above.
        if key is not None and self.cache is not None:
            model = served_model(req.model.name)
            generation = Generation(text, model, served_by(self.upstream.name), finish)
            try:
                await self._store(key, generation)
            except CacheUnavailable as exc:
                self._cache_failed(exc)

    async def _generate(self, req: GenerationRequest) -> Generation:
        """The upstream's reply, within the gateway's bound on every reply (budget.py), and
        refused if it carries one of the gateway's secrets."""
        generation = bound_generation(await self.upstream.generate(req), budget_chars(req))
        if self._leaks is not None:
            self._leaks.whole(generation.text)
        return generation

    async def clear_cache(self) -> int:
        """Remove every entry; the number removed. Raises CacheUnavailable."""
        return await self.cache.clear() if self.cache is not None else 0

    async def ready(self) -> Readiness:
        return await self.upstream.ready()

    async def start(self) -> None:
        await self.upstream.start()

    async def aclose(self) -> None:
        await self._streams.aclose()
        await self.upstream.aclose()
        if self.cache is not None:
            await self.cache.aclose()
