"""The circuit breaker (proxy/routing/breaker.py) and how ResilientUpstream feeds it: a half-open
circuit lets exactly one probe through, and only failures that say the upstream cannot serve
count toward opening it; a refused request is an answer, not an outage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from proxy.core.catalog import Catalog
from proxy.core.generation import Chunk, Generation, GenerationRequest
from proxy.errors import (
    GatewayError,
    InvalidParameter,
    InvalidRequest,
    UpstreamAppError,
    UpstreamBadResponse,
    UpstreamBusy,
    UpstreamRejected,
    UpstreamStarting,
    UpstreamTimeout,
    UpstreamUnavailable,
    UpstreamUnreachable,
)
from proxy.observe.metrics import Metrics
from proxy.routes.bodies import to_generation_request
from proxy.routing.breaker import CircuitBreaker
from proxy.routing.resilient import ResilientUpstream
from proxy.upstreams.mock import MockUpstream
from tests.support.bodies import chat_body

REQUEST = to_generation_request(
    chat_body(inputs="How can I sleep better?"),
    Catalog(default="llama-2-7b-chat"),
    max_prompt_chars=10_000,
    max_new_tokens_limit=1024,
    system_prompt=None,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ScriptedUpstream(MockUpstream):
    """Raises the scripted errors in turn, then answers; a call can be held at a gate."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.errors: list[GatewayError] = []
        self.gate: asyncio.Event | None = None

    async def generate(self, req: GenerationRequest) -> Generation:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.errors:
            raise self.errors.pop(0)
        return await super().generate(req)

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        yield Chunk((await self.generate(req)).text, finish_reason="stop")


def resilient(inner: ScriptedUpstream, clock: Clock, *, failures: int = 2) -> ResilientUpstream:
    breaker = CircuitBreaker(failures=failures, cooldown=10, clock=clock)
    return ResilientUpstream(
        inner, breaker=breaker, max_concurrency=16, queue_timeout=1, metrics=Metrics()
    )


def test_a_half_open_circuit_admits_exactly_one_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=2, cooldown=10, clock=clock)
    breaker.failure()
    breaker.failure()
    with pytest.raises(UpstreamUnavailable):
        breaker.admit()
    clock.now += 10
    assert breaker.admit() is True  # the probe
    assert breaker.state == "half-open"
    for _ in range(3):  # everyone else still fails fast while it runs
        with pytest.raises(UpstreamUnavailable):
            breaker.admit()
    breaker.failure()  # the probe failed: open again, until the next probe (the cool-down
    with pytest.raises(UpstreamUnavailable):  # here, as no probe interval is set)
        breaker.admit()
    clock.now += 10
    assert breaker.admit() is True
    breaker.success()
    assert breaker.state == "closed" and breaker.admit() is False


async def test_concurrent_calls_on_a_half_open_circuit_send_one_probe_upstream() -> None:
    clock = Clock()
    inner = ScriptedUpstream()
    upstream = resilient(inner, clock)
    inner.errors = [UpstreamUnreachable("down"), UpstreamUnreachable("down")]
    for _ in range(2):
        with pytest.raises(UpstreamUnreachable):
            await upstream.generate(REQUEST)
    clock.now += 10
    inner.gate = asyncio.Event()
    calls = [asyncio.ensure_future(upstream.generate(REQUEST)) for _ in range(5)]
    await asyncio.sleep(0)  # every call has run up to the breaker or the upstream
    refused = [call for call in calls if call.done()]
    assert inner.calls == 3 and len(refused) == 4  # two failures, then the one probe
    for call in refused:
        assert isinstance(call.exception(), UpstreamUnavailable)
    inner.gate.set()
    probe = next(call for call in calls if call not in refused)
    assert (await probe).text
    assert upstream.breaker.state == "closed"
    assert (await upstream.generate(REQUEST)).text and inner.calls == 4


OUTAGES = [
    UpstreamUnreachable("connection refused"),
    UpstreamBusy("queue full", retry_after=1),
    UpstreamStarting("asleep", retry_after=1),
    UpstreamTimeout("no first token"),
    UpstreamBadResponse("garbage"),
]
REFUSALS = [
    UpstreamRejected("the model refused this input"),
    UpstreamAppError("the Space raised on this input"),
    InvalidParameter("max_new_tokens is out of range"),
    InvalidRequest("bad request"),
]


@pytest.mark.parametrize("error", OUTAGES, ids=lambda e: type(e).__name__)
async def test_failures_that_mean_the_upstream_cannot_serve_open_the_circuit(
    error: GatewayError,
) -> None:
    inner = ScriptedUpstream()
    upstream = resilient(inner, Clock())
    inner.errors = [error, error]
    for _ in range(2):
        with pytest.raises(type(error)):
            await upstream.generate(REQUEST)
    with pytest.raises(UpstreamUnavailable):
        await upstream.generate(REQUEST)
    assert inner.calls == 2


@pytest.mark.parametrize("error", REFUSALS, ids=lambda e: type(e).__name__)
async def test_a_refused_request_never_opens_the_circuit(error: GatewayError) -> None:
    inner = ScriptedUpstream()
    upstream = resilient(inner, Clock())
    inner.errors = [error] * 5
    for _ in range(5):
        with pytest.raises(type(error)):
            await upstream.generate(REQUEST)
    assert upstream.breaker.state == "closed"
    assert (await upstream.generate(REQUEST)).text and inner.calls == 6


def test_after_a_failed_probe_the_next_comes_after_the_probe_interval() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failures=2, cooldown=30, probe_interval=2, clock=clock)
    breaker.failure()
    breaker.failure()
    clock.now += 29
    with pytest.raises(UpstreamUnavailable) as first:
        breaker.admit()
    assert first.value.retry_after == 1
    clock.now += 1
    assert breaker.admit() is True
    breaker.failure()  # still down
    clock.now += 1.5
    with pytest.raises(UpstreamUnavailable) as second:
        breaker.admit()
    assert second.value.retry_after == 1  # not another 30 s
    clock.now += 0.5
    assert breaker.admit() is True
    breaker.success()
    assert breaker.state == "closed"
