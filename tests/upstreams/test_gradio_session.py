"""Calls that keep nothing in their session share one, and read one stream (queue/data): one
request to the Space per generation, and every fault still ends each call as before."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

from proxy import Settings
from proxy.core.catalog import Catalog
from proxy.core.generation import GenerationRequest
from proxy.errors import GatewayError
from proxy.routes.bodies import to_generation_request
from proxy.upstreams import Upstream, build_upstream
from proxy.upstreams.gradio_app import AppAPI
from proxy.upstreams.gradio_plan import plan_endpoint
from proxy.upstreams.gradio_session import SessionCall
from tests.support.bodies import chat_body
from tests.support.servers import wait_for
from tests.support.session_space import CONFIG, INFO, WORDS, SessionSpace

PREDICT = "POST /gradio_api/call/predict"
STREAM = "GET /gradio_api/queue/data"


def request(tag: str) -> GenerationRequest:
    return to_generation_request(
        chat_body(inputs=f"answer with {tag}", parameters={"max_new_tokens": 200}),
        Catalog(default="llama-2-7b-chat"),
        max_prompt_chars=10_000,
        max_new_tokens_limit=1024,
        system_prompt=None,
    )


def answer(tag: str) -> str:
    return " ".join(f"{tag}{i}" for i in range(WORDS))


@asynccontextmanager
async def adapter(space: SessionSpace, **settings: Any) -> AsyncIterator[Upstream]:
    defaults = {"upstream_retries": 0, "upstream_timeout": 8, "upstream_read_timeout": 8}
    upstream = build_upstream(Settings(upstream_url=space.url, **{**defaults, **settings}))
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.aclose()


async def streamed(upstream: Upstream, tag: str) -> str:
    return "".join([chunk.text async for chunk in upstream.stream(request(tag))])


async def test_concurrent_calls_cost_one_request_each_and_read_one_stream() -> None:
    with SessionSpace() as space:
        async with adapter(space) as upstream:
            tags = [f"w{i}" for i in range(8)]
            replies = await asyncio.gather(*(upstream.generate(request(t)) for t in tags))
            streams = await asyncio.gather(*(streamed(upstream, f"s{i}") for i in range(4)))
    assert [r.text for r in replies] == [answer(t) for t in tags]  # each its own answer
    assert streams == [answer(f"s{i}") for i in range(4)]
    assert space.hits[PREDICT] == 12
    assert space.hits[STREAM] <= 2  # one for each batch: the session is idle in between
    assert not [hit for hit in space.hits if hit.startswith("GET /gradio_api/call/")]
    assert len(space.sessions) == 1


async def test_messages_that_come_before_the_submits_answer_are_kept() -> None:
    with SessionSpace("early") as space:
        async with adapter(space) as upstream:
            long = upstream.stream(request("long"))  # holds the session's stream open
            async with aclosing(long):
                await anext(long)
                replies = await asyncio.gather(
                    *(upstream.generate(request(f"e{i}")) for i in range(3))
                )
                rest = "".join([chunk.text async for chunk in long])
    assert [r.text for r in replies] == [answer(f"e{i}") for i in range(3)]
    assert rest.endswith("long19")


async def test_a_wait_on_the_shared_stream_ends_at_its_bound_and_the_others_go_on() -> None:
    with SessionSpace() as space:
        async with adapter(
            space, upstream_first_token_timeout=0.3, upstream_timeout=1.5, upstream_read_timeout=1.5
        ) as upstream:
            started = time.monotonic()
            stalled, halted, fine = await asyncio.gather(
                streamed(upstream, "stall"),
                streamed(upstream, "halt"),
                streamed(upstream, "fine"),
                return_exceptions=True,
            )
            elapsed = time.monotonic() - started
            # Each ended at its own bound: no first word by the first-token deadline, no next
            # word by the call's deadline; the call beside them was answered.
            assert isinstance(stalled, GatewayError)
            assert stalled.code == "upstream_first_token_timeout"
            assert isinstance(halted, GatewayError) and halted.code == "upstream_timeout"
            assert fine == answer("fine")
            assert 1.4 < elapsed < 5
            # Both are stopped at the Space.
            await wait_for(lambda: len(space.cancelled) == 2, timeout=5, what="the cancels")


async def test_a_call_that_ended_is_not_kept_until_its_deadline() -> None:
    with SessionSpace() as space:
        async with adapter(space, upstream_timeout=60, upstream_read_timeout=60) as upstream:
            assert await streamed(upstream, "kept") == answer("kept")
            gc.collect()
            # Its wait's timer (due in a minute) went with it.
            assert not [o for o in gc.get_objects() if type(o) is SessionCall]


async def test_a_stream_that_closes_while_calls_wait_is_opened_again() -> None:
    with SessionSpace("closing") as space:
        async with adapter(space) as upstream:
            replies = await asyncio.gather(*(upstream.generate(request(f"c{i}")) for i in range(3)))
    assert [r.text for r in replies] == [answer(f"c{i}") for i in range(3)]
    assert space.hits[STREAM] >= 2


async def test_a_cut_stream_fails_every_call_it_carried() -> None:
    with SessionSpace("cut", cut_after=6) as space:
        async with adapter(space) as upstream:

            async def outcome(tag: str) -> tuple[str, Any]:
                text = ""
                try:
                    async for chunk in upstream.stream(request(tag)):
                        text += chunk.text
                except GatewayError as exc:
                    return text, exc.code
                return text, None

            outcomes = await asyncio.gather(*(outcome(f"x{i}") for i in range(3)))
            after = await upstream.generate(request("later"))  # the next call is served
    assert all(code == "upstream_disconnected" for _, code in outcomes), outcomes
    assert all(text.startswith("x") for text, _ in outcomes)  # each had begun
    assert after.text == answer("later")


async def test_a_call_that_leaves_early_is_cancelled_at_the_space_and_the_others_go_on() -> None:
    with SessionSpace(gap=0.05) as space:
        async with adapter(space) as upstream:

            async def leaves() -> str:
                async with aclosing(upstream.stream(request("gone"))) as chunks:
                    return (await anext(chunks)).text

            first, *rest = await asyncio.gather(
                leaves(), *(upstream.generate(request(f"k{i}")) for i in range(2))
            )
            await wait_for(lambda: len(space.cancelled) == 1, timeout=5, what="the cancel")
    assert first == "gone0"
    assert [r.text for r in rest] == [answer("k0"), answer("k1")]
    assert space.cancelled == ["ev1"]  # the one that left, and only it


async def test_an_upstream_without_a_session_stream_serves_each_call_its_own() -> None:
    with SessionSpace("nostream") as space:
        async with adapter(space) as upstream:
            replies = [await upstream.generate(request(f"n{i}")) for i in range(2)]
    assert [r.text for r in replies] == [answer("own")] * 2
    assert space.hits[STREAM] == 1  # asked once, then never again
    assert space.hits["GET /gradio_api/call/predict/ev1"] == 1


async def test_with_shared_sessions_off_each_call_has_its_own() -> None:
    with SessionSpace() as space:
        async with adapter(space, space_shared_session=False) as upstream:
            replies = await asyncio.gather(*(upstream.generate(request(f"o{i}")) for i in range(3)))
    assert [r.text for r in replies] == [answer("own")] * 3
    assert space.hits[STREAM] == 0 and len(space.sessions) == 3


def _plan(config: dict[str, Any]) -> bool:
    return plan_endpoint(AppAPI.of(INFO, config), "/predict", prefix="/gradio_api").shares_session


def test_only_an_event_that_keeps_nothing_per_session_shares_one() -> None:
    assert _plan(CONFIG)
    assert not _plan({**CONFIG, "connect_heartbeat": True})  # gr.State or an unload event
    stateful = [{**c, "type": "state"} if c["id"] == 2 else c for c in CONFIG["components"]]
    assert not _plan({**CONFIG, "components": stateful})
    assert not _plan({k: v for k, v in CONFIG.items() if k != "dependencies"})  # no fn_index
