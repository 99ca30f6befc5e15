"""Failover a careful client would sign, against in-test OpenAI-compatible servers on real
sockets: the primary is used again within seconds of its recovery however its failures were
spread, a short Retry-After and a single 500 are retried on the primary before moving on, a
slow first token moves on while another upstream is ready (and is waited for when none is),
and the reply names the model that served it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import gateway_client
from tests.support.fake_llm_servers import FakeOpenAI
from tests.support.servers import ThreadServer

pytestmark = pytest.mark.e2e

MODEL = "llama-2-7b-chat"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "How do I sleep better?"}]}


@asynccontextmanager
async def primary_and_fallback(
    tmp_path: Path, primary_table: str = "", **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeOpenAI, FakeOpenAI]]:
    """A gateway over two OpenAI-compatible servers: ``primary`` first, ``fallback`` after
    it, each naming the model it serves as vLLM would (its ``model_map`` target)."""
    primary, fallback = FakeOpenAI(), FakeOpenAI()
    with (
        ThreadServer(primary.app(), lifespan="off") as one,
        ThreadServer(fallback.app(), lifespan="off") as two,
    ):
        path = tmp_path / "upstreams.toml"
        path.write_text(
            f'[[upstreams]]\nname = "primary"\nkind = "openai"\nurl = "{one.url}"\n'
            f'model_map = {{ "{MODEL}" = "vllm/llama-2-7b-chat-primary" }}\n{primary_table}\n'
            f'[[upstreams]]\nname = "fallback"\nkind = "openai"\nurl = "{two.url}"\n'
            f'priority = 1\nmodel_map = {{ "{MODEL}" = "provider/llama-2-7b-chat-0613" }}\n'
        )
        values = {
            "upstreams_file": str(path),
            "cache_enabled": False,
            "rate_limit": "off",
            "upstream_retries": 0,
            **settings,
        }
        async with gateway_client(**values) as client:
            yield client, primary, fallback


def generations(server: FakeOpenAI) -> int:
    return sum(path.endswith("/completions") for path, _, _ in server.requests)


async def test_the_primary_serves_again_within_seconds_of_its_recovery(tmp_path: Path) -> None:
    # A minute of 503s in the benchmark, scaled down: the primary is down for 4 s while
    # requests keep coming, failing often enough that its breaker would have opened, then it
    # is healthy. The wait decides alone, and is probed in the background once it is over.
    async with primary_and_fallback(tmp_path, upstream_cooldown=0.5) as (client, primary, _):
        primary.down = True
        started = time.monotonic()
        while time.monotonic() - started < 4:
            reply = await client.post("/v1/chat/completions", json=CHAT)
            assert reply.status_code == 200 and reply.headers["x-upstream"] == "fallback"
            await asyncio.sleep(0.1)
        # Tried (probed in the background, or by a request once its wait was over) more
        # often than CIRCUIT_FAILURES, which would have opened its circuit; never hammered.
        assert 6 <= len(primary.requests) <= 20
        primary.down = False
        recovered_at = time.monotonic()
        while True:
            reply = await client.post("/v1/chat/completions", json=CHAT)
            if reply.headers["x-upstream"] == "primary":
                break
            assert time.monotonic() - recovered_at < 3, "the primary was not used again"
            await asyncio.sleep(0.05)
        back_after = time.monotonic() - recovered_at
    assert back_after < 1.5  # within the cool-down of its recovery, not 30 s of an open circuit


async def test_a_failed_primary_is_probed_in_the_background_when_its_wait_is_over(
    tmp_path: Path,
) -> None:
    async with primary_and_fallback(tmp_path, upstream_cooldown=0.5) as (client, primary, _):
        primary.down = True
        assert (await client.post("/v1/chat/completions", json=CHAT)).headers[
            "x-upstream"
        ] == "fallback"
        primary.down = False
        probed_from = len(primary.requests)
        # No request comes; the router asks the primary itself once its wait is over.
        deadline = time.monotonic() + 3
        ready = 'proxy_upstream_state{state="ready",upstream="primary"} 1.0'
        while ready not in (await client.get("/metrics")).text:
            assert time.monotonic() < deadline, "no background probe found the primary back"
            await asyncio.sleep(0.1)
        assert any(path == "/v1/models" for path, _, _ in primary.requests[probed_from:])
        reply = await client.post("/v1/chat/completions", json=CHAT)
    assert reply.headers["x-upstream"] == "primary"


def rate_limited(seconds: int) -> tuple[int, dict[str, Any], dict[str, str]]:
    body = {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit"}}
    return 429, body, {"Retry-After": str(seconds)}


def server_error() -> tuple[int, dict[str, Any], dict[str, str]]:
    return 500, {"error": {"message": "The server had an error", "type": "server_error"}}, {}


async def test_a_short_retry_after_is_waited_out_on_the_primary(tmp_path: Path) -> None:
    async with primary_and_fallback(tmp_path) as (client, primary, fallback):
        primary.script = [rate_limited(1)]
        started = time.monotonic()
        reply = await client.post("/v1/chat/completions", json=CHAT)
        took = time.monotonic() - started
    assert reply.status_code == 200 and reply.headers["x-upstream"] == "primary"
    assert 0.9 < took < 3
    assert (generations(primary), generations(fallback)) == (2, 0)


async def test_a_long_retry_after_moves_on_at_once(tmp_path: Path) -> None:
    async with primary_and_fallback(tmp_path) as (client, primary, fallback):
        primary.script = [rate_limited(30)]
        started = time.monotonic()
        reply = await client.post("/v1/chat/completions", json=CHAT)
        took = time.monotonic() - started
    assert reply.headers["x-upstream"] == "fallback" and took < 1
    assert (generations(primary), generations(fallback)) == (1, 1)


async def test_a_single_500_is_retried_on_the_primary_and_two_move_on(tmp_path: Path) -> None:
    async with primary_and_fallback(tmp_path) as (client, primary, fallback):
        primary.script = [server_error()]
        once = await client.post("/v1/chat/completions", json=CHAT)
        assert (once.headers["x-upstream"], generations(primary)) == ("primary", 2)
        primary.script = [server_error(), server_error()]
        twice = await client.post("/v1/chat/completions", json=CHAT)
    assert twice.headers["x-upstream"] == "fallback"
    assert (generations(primary), generations(fallback)) == (4, 1)


async def test_a_table_still_sets_its_own_retries(tmp_path: Path) -> None:
    async with primary_and_fallback(tmp_path, "upstream_retries = 0\n") as (client, primary, _):
        primary.script = [server_error()]
        reply = await client.post("/v1/chat/completions", json=CHAT)
    assert reply.headers["x-upstream"] == "fallback" and generations(primary) == 1


async def test_a_slow_first_token_moves_on_while_another_upstream_is_ready(
    tmp_path: Path,
) -> None:
    async with primary_and_fallback(tmp_path, failover_first_token_timeout=0.5) as (
        client,
        primary,
        fallback,
    ):
        primary.first_token_delay = 5
        started = time.monotonic()
        reply = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        took = time.monotonic() - started
    assert reply.status_code == 200 and reply.headers["x-upstream"] == "fallback"
    assert took < 2  # not the 60 s of UPSTREAM_FIRST_TOKEN_TIMEOUT
    assert "data: [DONE]" in reply.text
    assert 'desc="primary upstream_timeout"' in reply.headers["server-timing"]


async def test_with_no_other_upstream_a_slow_first_token_is_waited_for(tmp_path: Path) -> None:
    server = FakeOpenAI()
    server.first_token_delay = 1.5
    with ThreadServer(server.app(), lifespan="off") as only:
        path = tmp_path / "upstreams.toml"
        path.write_text(f'[[upstreams]]\nname = "only"\nkind = "openai"\nurl = "{only.url}"\n')
        async with gateway_client(
            upstreams_file=str(path), cache_enabled=False, failover_first_token_timeout=0.5
        ) as client:
            reply = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert reply.status_code == 200 and reply.headers["x-upstream"] == "only"
    assert "data: [DONE]" in reply.text


def stream_models(text: str) -> set[str]:
    found = set()
    for line in text.splitlines():
        if line.startswith("data: {"):
            found.add(orjson.loads(line[6:])["model"])
    return found


async def test_the_reply_names_the_model_that_served_it(tmp_path: Path) -> None:
    async with primary_and_fallback(tmp_path) as (client, primary, _):
        served = await client.post("/v1/chat/completions", json=CHAT)
        primary.down = True
        failed_over = await client.post("/v1/chat/completions", json=CHAT)
        streamed = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        chat = await client.post("/api/chat", json={"inputs": "Tips for stress?"})
        chat_stream = await client.post("/api/chat", json={"inputs": "Tips?", "stream": True})
    assert served.json()["model"] == "vllm/llama-2-7b-chat-primary"
    assert failed_over.json()["model"] == "provider/llama-2-7b-chat-0613"
    assert failed_over.headers["x-upstream"] == "fallback"  # the upstream, by its name
    assert stream_models(streamed.text) == {"provider/llama-2-7b-chat-0613"}
    assert chat.json()["model"] == "provider/llama-2-7b-chat-0613"
    done = [line for line in chat_stream.text.splitlines() if line.startswith("data: {")][-1]
    assert orjson.loads(done[6:])["model"] == "provider/llama-2-7b-chat-0613"


async def test_a_refused_connection_moves_on_at_once(tmp_path: Path) -> None:
    primary, fallback = FakeOpenAI(), FakeOpenAI()
    one = ThreadServer(primary.app(), lifespan="off").__enter__()
    with ThreadServer(fallback.app(), lifespan="off") as two:
        path = tmp_path / "upstreams.toml"
        path.write_text(
            f'[[upstreams]]\nname = "primary"\nkind = "openai"\nurl = "{one.url}"\n\n'
            f'[[upstreams]]\nname = "fallback"\nkind = "openai"\nurl = "{two.url}"\n'
            "priority = 1\n"
        )
        try:
            async with gateway_client(upstreams_file=str(path), cache_enabled=False) as client:
                one.__exit__(None, None, None)  # up at start-up, then its port refuses
                started = time.monotonic()
                reply = await client.post("/v1/chat/completions", json=CHAT)
                took = time.monotonic() - started
        finally:
            one.__exit__(None, None, None)
    # Down, not slow to say yes: a refused connection is not retried in place (the pooled
    # connection found closed may be, once, as a reset is), and nothing waits for a back-off.
    assert reply.headers["x-upstream"] == "fallback" and took < 1
    assert reply.headers["server-timing"].count('desc="primary upstream_') == 1
    assert len([path for path, _, _ in primary.requests if path.endswith("/completions")]) == 0


async def test_failover_never_outlasts_the_requests_deadline(tmp_path: Path) -> None:
    async with primary_and_fallback(
        tmp_path, upstream_timeout=2.0, upstream_read_timeout=2.0, failover_first_token_timeout=1.2
    ) as (client, primary, fallback):
        primary.first_token_delay = fallback.first_token_delay = 5
        started = time.monotonic()
        reply = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        took = time.monotonic() - started
    # 1.2 s for the primary, then what is left of UPSTREAM_TIMEOUT for the fallback.
    assert reply.status_code == 504 and reply.json()["error"]["code"] == "upstream_timeout"
    assert 1.9 < took < 2.6
