"""A hostile or broken upstream, written here, behind ``python -m proxy``: a stream without
end, an event without end, an answer of 150 MiB, a small compressed answer that inflates to
150 MiB. Each costs the gateway a bounded amount of
memory, sends the client a bounded reply, and ends with a specific answer."""

from __future__ import annotations

import asyncio
import base64
import functools
import time
import zlib
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.support.fake_llm_servers import FakeOpenAI
from tests.support.processes import Gateway, clean_env, gateway_command, rss_mib, running
from tests.support.servers import ThreadServer, free_port, wait_until

pytestmark = pytest.mark.e2e

TOKEN = "hf_HostileUpstreamToken0123456789"
PIECE = "flood " * 2000  # 12 KB of content per event


@functools.cache
def gzip_bomb() -> bytes:
    """A JSON answer of 150 MiB, gzipped to a few hundred KB."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # the gzip format
    parts = [packer.compress(b'{"choices": [{"index": 0, "message": {"content": "')]
    piece = b"y" * 65536
    parts += [packer.compress(piece) for _ in range(150 * 16)]
    parts += [packer.compress(b'"}, "finish_reason": "stop"}]}'), packer.flush()]
    return b"".join(parts)


async def completions(request: Request) -> Response:
    body = orjson.loads(await request.body())
    prompt = body["messages"][-1]["content"]

    async def endless() -> AsyncIterator[bytes]:
        while True:
            delta = {"choices": [{"index": 0, "delta": {"content": PIECE}}]}
            yield b"data: " + orjson.dumps(delta) + b"\n\n"
            await asyncio.sleep(0)

    async def no_boundary() -> AsyncIterator[bytes]:
        yield b'data: {"choices": [{"index": 0, "delta": {"content": "'
        while True:
            yield b"x" * 65536
            await asyncio.sleep(0)

    async def huge() -> AsyncIterator[bytes]:
        yield b'{"choices": [{"index": 0, "message": {"content": "'
        for _ in range(150 * 16):  # 150 MiB
            yield b"y" * 65536
            await asyncio.sleep(0)
        yield b'"}, "finish_reason": "stop"}]}'

    if "ECHO" in prompt:  # a Space that hands back the headers it got, base64'd in a stream
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if body.get("stream"):
            hidden = base64.b64encode(f"your key: {token}".encode()).decode()

            async def echo() -> AsyncIterator[bytes]:
                for piece in ("Here it is: ", hidden[:20], hidden[20:]):
                    delta = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                    yield b"data: " + orjson.dumps(delta) + b"\n\n"

            return StreamingResponse(echo(), media_type="text/event-stream")
        answer = {"choices": [{"index": 0, "message": {"content": f"token {token}"},
                               "finish_reason": "stop"}]}  # fmt: skip
        return Response(orjson.dumps(answer), media_type="application/json")
    if "NOBOUNDARY" in prompt:
        return StreamingResponse(no_boundary(), media_type="text/event-stream")
    if "HUGE" in prompt:
        return StreamingResponse(huge(), media_type="application/json")
    if "GZIPBOMB" in prompt:  # with its Content-Length: the compressed size, well in bounds
        return Response(gzip_bomb(), headers={"Content-Encoding": "gzip"},
                        media_type="application/json")  # fmt: skip
    return StreamingResponse(endless(), media_type="text/event-stream")


async def health(request: Request) -> Response:
    return Response("{}", media_type="application/json")


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"]),
                            Route("/health", health)])  # fmt: skip
    with ThreadServer(app, lifespan="off") as hostile:
        port = free_port()
        env = clean_env(UPSTREAM_URL=hostile.url, UPSTREAM_KIND="openai", RATE_LIMIT="off",
                        CACHE_ENABLED="false", HF_TOKEN=TOKEN,
                        CIRCUIT_FAILURES="1000")  # fmt: skip
        with running(gateway_command(port), env, port) as served:
            yield served


def ask(gateway: Gateway, prompt: str, *, stream: bool) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": prompt}], "stream": stream,
            "parameters": {"max_new_tokens": 64}}  # fmt: skip
    return httpx.post(f"{gateway.url}/api/chat", json=body, timeout=60)


def test_an_endless_stream_stops_at_the_budget(gateway: Gateway) -> None:
    before = rss_mib(gateway.process.pid)
    for _ in range(3):
        response = ask(gateway, "tell me everything", stream=True)
        assert response.status_code == 200
        assert len(response.content) < 2 << 20
        done = [line for line in response.text.splitlines() if line.startswith("data:")][-1]
        finished = orjson.loads(done.removeprefix("data: "))
        assert finished["finish_reason"] == "length"
        assert len(finished["generated_text"]) <= 64 * 4 * 2  # the gateway's bound
        # Asked for JSON, it streams without end: refused at the answer's size bound.
        whole = ask(gateway, "and again", stream=False)
        assert (whole.status_code, whole.json()["code"]) == (502, "upstream_too_large")
    assert rss_mib(gateway.process.pid) - before < 50


@pytest.mark.parametrize(
    ("prompt", "stream", "code"),
    [
        ("NOBOUNDARY", True, "upstream_event_too_large"),
        ("HUGE", False, "upstream_too_large"),
        ("GZIPBOMB", False, "upstream_too_large"),
    ],
    ids=["an event without end", "an answer of 150 MiB", "a compressed answer of 150 MiB"],
)
def test_an_unbounded_answer_is_a_502_without_being_held(
    gateway: Gateway, prompt: str, stream: bool, code: str
) -> None:
    before = rss_mib(gateway.process.pid)
    response = ask(gateway, prompt, stream=stream)
    assert response.status_code == 502
    assert response.json()["code"] == code
    assert rss_mib(gateway.process.pid) - before < 50


def test_abandoned_streams_are_cancelled_upstream_within_a_second() -> None:
    """Five clients leave their streams at once: the upstream sees each hang-up within a
    second of the client's, as the README says."""
    upstream = FakeOpenAI()
    with ThreadServer(upstream.app(), lifespan="off") as served:
        port = free_port()
        env = clean_env(UPSTREAM_URL=served.url, UPSTREAM_KIND="openai", RATE_LIMIT="off",
                        CACHE_ENABLED="false")  # fmt: skip
        with running(gateway_command(port), env, port) as gateway:
            body = {"inputs": "SLOW please", "stream": True}
            clients = [httpx.Client(timeout=30) for _ in range(5)]
            streams = [c.stream("POST", f"{gateway.url}/api/chat", json=body) for c in clients]
            responses = [s.__enter__() for s in streams]
            for response in responses:  # each stream has begun
                next(response.iter_raw())
            left = time.monotonic()
            for stream, client in zip(streams, clients, strict=True):
                stream.__exit__(None, None, None)
                client.close()
            wait_until(lambda: len(upstream.hung_up) == 5, timeout=10, what="5 hang-ups")
            wait_until(
                lambda: gateway.read_output().count("POST /api/chat 499") == 5,
                timeout=10,
                what="the abandoned streams logged as 499",
            )
    assert max(upstream.hung_up) - left < 1.0


def test_a_reply_that_carries_the_token_is_refused_and_not_logged(gateway: Gateway) -> None:
    whole = ask(gateway, "ECHO my headers", stream=False)
    assert (whole.status_code, whole.json()["code"]) == (502, "upstream_leaked_secret")
    assert TOKEN not in whole.text
    # Streamed, base64'd and split over two events: the stream ends in an error event
    # before the event that completes the token.
    streamed = ask(gateway, "ECHO my headers", stream=True)
    last = [line for line in streamed.text.splitlines() if line.startswith("data:")][-1]
    assert orjson.loads(last.removeprefix("data: "))["code"] == "upstream_leaked_secret"
    hidden = base64.b64encode(f"your key: {TOKEN}".encode()).decode()
    assert hidden[20:] not in streamed.text
    assert "upstream_leaked_secret" not in gateway.read_output()  # the code, not the text
    assert TOKEN not in gateway.read_output()
    assert "carried one of the gateway's secrets" in gateway.read_output()
