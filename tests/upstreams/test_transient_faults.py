"""Transient upstream faults ridden out as a careful client rides them out, against the in-test
TGI and OpenAI-compatible servers (each test scripts its own faults on a fresh server): a short
Retry-After waited out, a long one answered at once, a 429 without one retried with back-off
and then returned, a single 500 retried, and recovery after an outage within the probe
interval, with one breaker per model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.conftest import gateway_client
from tests.support.audit import TOKEN
from tests.support.fake_llm_servers import FakeOpenAI, FakeServer, FakeTGI
from tests.support.servers import ThreadServer

KINDS = ["tgi", "openai"]
BODY = {"inputs": "How can I sleep better?"}


@pytest.fixture(params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeServer, str]]:
    kind = request.param
    fake: FakeServer = FakeTGI() if kind == "tgi" else FakeOpenAI()
    with ThreadServer(fake.app(), lifespan="off") as served:  # type: ignore[attr-defined]
        url = served.url if kind == "tgi" else f"{served.url}/v1"
        yield kind, fake, url


def gateway(kind: str, url: str, **extra: Any) -> Any:
    values = {"upstream_kind": kind, "upstream_url": url, "hf_token": TOKEN,
              "cache_enabled": False, "rate_limit": "off", **extra}  # fmt: skip
    return gateway_client(**values)


def error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "requests", "param": None, "code": None}}


async def test_a_short_retry_after_is_waited_out(server: tuple[str, FakeServer, str]) -> None:
    kind, fake, url = server
    fake.script = [(429, error(429, "Rate limit reached"), {"Retry-After": "2"})]
    async with gateway(kind, url) as client:
        started = time.monotonic()
        response = await client.post("/api/chat", json=BODY)
    assert response.status_code == 200, response.text
    assert len(fake.arrivals) == 2
    assert fake.arrivals[1] - fake.arrivals[0] >= 1.8  # the upstream's wait, not a back-off
    assert sum(1 for t in fake.arrivals if t - started < 1.5) <= 1


async def test_a_long_retry_after_is_answered_at_once(server: tuple[str, FakeServer, str]) -> None:
    kind, fake, url = server
    fake.script = [(429, error(429, "Rate limit reached"), {"Retry-After": "30"})]
    async with gateway(kind, url) as client:
        started = time.monotonic()
        response = await client.post("/api/chat", json=BODY)
        took = time.monotonic() - started
    assert (response.status_code, response.json()["code"]) == (429, "upstream_rate_limited")
    assert response.headers["retry-after"] == "30"
    assert len(fake.arrivals) == 1 and took < 1


async def test_a_429_without_retry_after_is_retried_with_back_off_then_returned(
    server: tuple[str, FakeServer, str],
) -> None:
    kind, fake, url = server
    fake.script = [(429, error(429, "Rate limit reached"), {})] * 10
    async with gateway(kind, url, upstream_retries=2) as client:
        response = await client.post("/api/chat", json=BODY)
    assert (response.status_code, response.json()["code"]) == (429, "upstream_rate_limited")
    assert response.headers["retry-after"]
    assert len(fake.arrivals) == 3  # the retry budget, not more
    gaps = [b - a for a, b in zip(fake.arrivals, fake.arrivals[1:], strict=False)]
    assert all(gap >= 0.09 for gap in gaps)  # back-off, never a tight loop


async def test_a_single_500_is_retried(server: tuple[str, FakeServer, str]) -> None:
    kind, fake, url = server
    fake.script = [(500, error(500, "The server had an error"), {})]
    async with gateway(kind, url) as client:
        response = await client.post("/api/chat", json=BODY)
        streamed = await client.post("/api/chat", json={**BODY, "stream": True})
    assert response.status_code == 200, response.text
    assert "event: done" in streamed.text
    assert len(fake.arrivals) == 3  # the 500 and its retry, then the stream


async def test_a_context_length_error_is_a_400_and_not_retried(
    server: tuple[str, FakeServer, str],
) -> None:
    kind, fake, url = server
    async with gateway(kind, url) as client:
        response = await client.post("/api/chat", json={"inputs": "VALIDATION " * 3})
        messages = [{"role": "user", "content": "VALIDATION"}]
        completion = await client.post(
            "/v1/chat/completions", json={"model": "llama-2-7b-chat", "messages": messages}
        )
    assert (response.status_code, response.json()["code"]) == (400, "prompt_too_long")
    assert completion.status_code == 400
    assert completion.json()["error"]["code"] == "prompt_too_long"
    assert len(fake.arrivals) == 2  # one call each


BREAKER = {"circuit_failures": 2, "circuit_cooldown": 1.0, "circuit_probe_interval": 0.2,
           "upstream_retries": 0}  # fmt: skip


async def test_after_an_outage_requests_are_served_within_the_probe_interval(
    server: tuple[str, FakeServer, str],
) -> None:
    kind, fake, url = server
    fake.down = True
    async with gateway(kind, url, **BREAKER) as client:
        codes = [(await client.post("/api/chat", json=BODY)).json()["code"] for _ in range(3)]
        assert codes[-1] == "upstream_unavailable"  # the circuit opened
        deadline = time.monotonic() + 1.6  # the outage goes on past the cool-down: probes fail
        while time.monotonic() < deadline:
            await client.post("/api/chat", json=BODY)
            await asyncio.sleep(0.05)
        fake.down = False
        recovered = time.monotonic()
        while (await client.post("/api/chat", json=BODY)).status_code != 200:
            assert time.monotonic() - recovered < 2, "not served again within the bound"
            await asyncio.sleep(0.02)
        took = time.monotonic() - recovered
    assert took < 0.2 + 0.15  # CIRCUIT_PROBE_INTERVAL, not another cool-down (1 s)


async def test_one_failing_model_does_not_lock_out_another_on_the_same_server() -> None:
    fake = FakeOpenAI()
    with ThreadServer(fake.app(), lifespan="off") as served:
        fake.down_models = {"meta-llama/Llama-2-13b-chat-hf"}
        async with gateway("openai", f"{served.url}/v1", **BREAKER) as client:
            big = {**BODY, "model": "llama-2-13b-chat"}
            failing = [(await client.post("/api/chat", json=big)).json()["code"] for _ in range(3)]
            small = await client.post("/api/chat", json=BODY)
    assert [r["model"] for _, _, r in fake.requests][:1] == ["meta-llama/Llama-2-13b-chat-hf"]
    assert failing[-1] == "upstream_unavailable"
    assert small.status_code == 200


async def test_usage_is_the_upstreams_own_on_both_fronts_streamed_or_not() -> None:
    fake = FakeOpenAI()
    with ThreadServer(fake.app(), lifespan="off") as served:
        async with gateway("openai", f"{served.url}/v1") as client:
            prompt = "one two three four five"
            answers = [
                await client.post("/api/chat", json={"inputs": prompt}),
                await client.post("/api/chat", json={"inputs": prompt, "stream": True}),
                await client.post("/v1/chat/completions", json={
                    "model": "llama-2-7b-chat", "messages": [{"role": "user", "content": prompt}]}),
                await client.post("/v1/chat/completions", json={
                    "model": "llama-2-7b-chat", "stream": True,
                    "stream_options": {"include_usage": True},
                    "messages": [{"role": "user", "content": prompt}]}),
            ]  # fmt: skip
    assert fake.requests[1][2]["stream_options"] == {"include_usage": True}
    found = [
        answers[0].json()["usage"],
        orjson.loads(answers[1].text.split("event: done\ndata: ")[1].split("\n")[0])["usage"],
        answers[2].json()["usage"],
        orjson.loads(answers[3].text.split("data: ")[-2].strip())["usage"],
    ]
    # The fake reports 11 prompt tokens and one per word of its echo (Echo: + the 5 words).
    expected = {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17,
                "estimated": False}  # fmt: skip
    assert found == [expected] * 4


async def test_usage_is_estimated_and_says_so_where_the_upstream_gives_none() -> None:
    async with gateway_client(mock_token_delay_ms=0) as client:  # the mock reports none
        response = await client.post("/api/chat", json=BODY)
    usage = response.json()["usage"]
    assert usage["estimated"] is True and usage["completion_tokens"] > 0


async def test_a_refused_connection_is_retried_alone_and_not_behind_a_router() -> None:
    from proxy.errors import UpstreamUnreachable
    from proxy.upstreams.retries import BeforeOutput, with_retries

    calls = 0

    async def refused() -> str:
        nonlocal calls
        calls += 1
        raise BeforeOutput(UpstreamUnreachable("cannot connect"))

    loop = asyncio.get_running_loop()
    for give_up_on, expected in (((), 2), ((UpstreamUnreachable,), 1)):
        calls = 0
        with pytest.raises(UpstreamUnreachable):
            await with_retries(refused, retries=1, deadline=loop.time() + 5, give_up_on=give_up_on)
        assert calls == expected
