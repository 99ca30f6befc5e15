"""One contract, every adapter (mock, gradio, tgi, openai), as uvicorn runs its tests over
every HTTP protocol class: generate, stream, close a stream early, and each fault shape
raising the same GatewayError class, so its classification (retried, unavailable, the
request's fault) means the same whichever upstream is behind the gateway."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from proxy import Settings
from proxy.core.catalog import Catalog
from proxy.core.generation import GenerationRequest
from proxy.errors import (
    GatewayError,
    UpstreamPromptTooLong,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnreachable,
)
from proxy.routes.bodies import to_generation_request
from proxy.upstreams import Upstream, build_upstream
from tests.support.audit import TOKEN
from tests.support.bodies import chat_body
from tests.support.fake_llm_servers import FakeOpenAI, FakeTGI
from tests.support.fault_space import FaultSpace
from tests.support.servers import ThreadServer, free_port, wait_for

KINDS = ["mock", "gradio", "tgi", "openai"]
HTTP_KINDS = KINDS[1:]


def request(text: str) -> GenerationRequest:
    return to_generation_request(
        chat_body(messages=[{"role": "user", "content": text}]),
        Catalog(default="llama-2-7b-chat"),
        max_prompt_chars=10_000,
        max_new_tokens_limit=1024,
        system_prompt=None,
    )


@dataclass
class Peers:
    """The peer of each HTTP kind: where it serves, and what it saw."""

    urls: dict[str, str]
    space: FaultSpace
    tgi: FakeTGI
    openai: FakeOpenAI

    def hang_ups(self, kind: str) -> list[float]:
        """When clients hung up on the peer's streams (monotonic times)."""
        if kind == "gradio":
            return list(self.space.closed_at.values())
        return (self.tgi if kind == "tgi" else self.openai).hung_up


@pytest.fixture(scope="module")
def peers(fault_space: FaultSpace) -> Iterator[Peers]:
    tgi, oai = FakeTGI(), FakeOpenAI()
    with ThreadServer(tgi.app(), lifespan="off") as a, ThreadServer(oai.app(), lifespan="off") as b:
        urls = {"gradio": fault_space.url, "tgi": a.url, "openai": f"{b.url}/v1"}
        yield Peers(urls, fault_space, tgi, oai)


@pytest.fixture(scope="module")
def urls(peers: Peers) -> dict[str, str]:
    """Where each HTTP kind's peer serves; the Gradio one by scenario."""
    return peers.urls


@asynccontextmanager
async def adapter(kind: str, url: str | None = None) -> AsyncIterator[Upstream]:
    values: dict[str, Any] = {"upstream_kind": kind, "mock_token_delay_ms": 0,
                              "upstream_retries": 0, "hf_token": TOKEN}  # fmt: skip
    if kind != "mock":
        values["upstream_url"] = url
    upstream = build_upstream(Settings(**values))
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.aclose()


def base(kind: str, urls: dict[str, str], scenario: str = "ok") -> str | None:
    if kind == "mock":
        return None
    return f"{urls['gradio']}/{scenario}" if kind == "gradio" else urls[kind]


@pytest.mark.parametrize("kind", KINDS)
async def test_generate_and_stream_give_the_same_text(kind: str, urls: dict[str, str]) -> None:
    req = request("How can I sleep better?")
    async with adapter(kind, base(kind, urls)) as upstream:
        generation = await upstream.generate(req)
        chunks = [chunk async for chunk in upstream.stream(req)]
    # The model as the upstream named it: an OpenAI-compatible server reports the one it
    # served; the others report none, so the catalogue's name stands.
    served = "meta-llama/Llama-2-7b-chat-hf" if kind == "openai" else "llama-2-7b-chat"
    assert generation.text and generation.model == served
    assert generation.upstream == kind
    assert not any(chunk.replace for chunk in chunks)
    assert "".join(chunk.text for chunk in chunks) == generation.text


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stream_closed_early_leaves_the_adapter_serving(
    kind: str, urls: dict[str, str]
) -> None:
    req = request("Tips for a cold?")
    async with adapter(kind, base(kind, urls)) as upstream:
        async with aclosing(upstream.stream(req)) as chunks:
            first = await anext(chunks)
        again = await upstream.generate(req)
    assert first.text and again.text


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_closing_a_stream_cancels_the_generation_at_the_peer(kind: str, peers: Peers) -> None:
    """A browser that leaves must not keep a GPU generating: the peer sees the hang-up."""
    if kind == "gradio":
        url, prompt = base(kind, peers.urls, "slowstream"), "hello"
    else:
        url, prompt = peers.urls[kind], "please go SLOW"
    before = len(peers.hang_ups(kind))
    async with adapter(kind, url) as upstream:
        async with aclosing(upstream.stream(request(prompt))) as chunks:
            first = await anext(chunks)
        left_at = time.monotonic()
        await wait_for(
            lambda: len(peers.hang_ups(kind)) > before, timeout=5, what="the peer to see it"
        )
    assert first.text
    assert peers.hang_ups(kind)[-1] - left_at < 1.0  # at once, not at the 30 s end


@pytest.mark.parametrize("kind", HTTP_KINDS)
async def test_nothing_listening_is_unreachable(kind: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with adapter(kind, url) as upstream:
        with pytest.raises(GatewayError) as info:
            await upstream.generate(request("hello"))
    assert type(info.value) is UpstreamUnreachable
    assert info.value.retry_before_output and info.value.unavailable


# (kind, scenario or prompt word) -> the error class every adapter must raise
FAULTS = [
    ("rate limited", UpstreamRateLimited, {"gradio": "ratelimit", "tgi": "OVERLOADED",
                                           "openai": "OVERLOADED"}),
    ("input refused", UpstreamRejected, {"gradio": "echo422", "tgi": "REFUSED",
                                         "openai": "REFUSED"}),
    ("prompt too long", UpstreamPromptTooLong, {"gradio": "toolong", "tgi": "VALIDATION",
                                                "openai": "VALIDATION"}),
]  # fmt: skip


@pytest.mark.parametrize("kind", HTTP_KINDS)
@pytest.mark.parametrize(("fault", "expected", "how"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_each_fault_is_the_same_error_on_every_adapter(
    kind: str, fault: str, expected: type[GatewayError], how: dict[str, str],
    urls: dict[str, str],
) -> None:  # fmt: skip
    if kind == "gradio":
        url, prompt = base(kind, urls, how["gradio"]), "hello"
    else:
        url, prompt = urls[kind], f"please {how[kind]} now"
    async with adapter(kind, url) as upstream:
        with pytest.raises(GatewayError) as info:
            await upstream.generate(request(prompt))
    assert type(info.value) is expected, info.value.message
    if issubclass(expected, UpstreamRejected):
        assert info.value.request_fault and not info.value.unavailable
    if expected is UpstreamRateLimited:
        assert info.value.retry_after and info.value.headers["Retry-After"]
    assert TOKEN not in info.value.message
