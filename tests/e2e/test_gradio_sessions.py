"""The shared Gradio session against a real gradio app: calls that keep nothing per session
share one, each gets its own answer, and a client that leaves is stopped at the app."""

from __future__ import annotations

import asyncio
from contextlib import aclosing

import msgspec

from proxy import Settings
from proxy.core.catalog import Catalog
from proxy.core.generation import GenerationRequest
from proxy.routes.bodies import ChatRequest, to_generation_request
from proxy.upstreams import build_upstream
from proxy.upstreams.gradio import GradioUpstream
from tests.e2e.conftest import GradioServer
from tests.support.servers import wait_for


def request(text: str) -> GenerationRequest:
    body = msgspec.convert({"inputs": text, "parameters": {"max_new_tokens": 300}}, ChatRequest)
    return to_generation_request(
        body,
        Catalog(default="llama-2-7b-chat"),
        max_prompt_chars=10_000,
        max_new_tokens_limit=1024,
        system_prompt=None,
    )


async def test_a_client_that_leaves_a_shared_session_is_stopped_and_the_others_go_on(
    gradio_server: GradioServer,
) -> None:
    upstream = build_upstream(Settings(upstream_url=f"{gradio_server.url}/full"))
    assert isinstance(upstream, GradioUpstream)
    await upstream.start()
    try:
        discovery = await upstream._ensure_discovery()
        assert discovery.stream is not None and discovery.stream.shares_session

        async def leaves() -> str:
            async with aclosing(upstream.stream(request("LONG leaver-7f3"))) as chunks:
                return (await anext(chunks)).text

        async def stays(tag: str) -> str:
            return "".join([chunk.text async for chunk in upstream.stream(request(tag))])

        first, *texts = await asyncio.gather(leaves(), stays("stayer-a"), stays("stayer-b"))
        await wait_for(
            lambda: any("leaver-7f3" in e["tail"] for e in gradio_server.stopped()),
            timeout=5,
            what="the app to stop the stream that was left",
        )
    finally:
        await upstream.aclose()
    assert first.strip() == "word"
    assert texts == ["Rest well and drink water."] * 2
    assert not any("stayer" in e["tail"] for e in gradio_server.stopped())
