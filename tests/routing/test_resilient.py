"""Upstream faults over time: retries before output, the circuit breaker, the concurrency
bound, the first-token timeout, cold starts explained by the Hub, and the mock fallback.
Each asserts what the client sees and that the next request works."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import gateway_client
from tests.support.audit import TOKEN
from tests.support.fault_space import FaultSpace
from tests.support.servers import ThreadServer

BODY = {"inputs": "How can I sleep better?"}


async def wait_for_status(
    client: httpx.AsyncClient, status: int, *, timeout: float, body: object = BODY
) -> httpx.Response:
    """POST until the answer has ``status``, within ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            response = await client.post("/api/chat", json=body)
            if response.status_code == status:
                return response
            await asyncio.sleep(0.05)


async def test_reset_before_the_event_id_is_retried_then_reported(
    fault_space: FaultSpace,
) -> None:
    posts = "reset POST /gradio_api/call/predict"
    before = fault_space.hits[posts]
    async with gateway_client(
        upstream_url=f"{fault_space.url}/reset", hf_token=TOKEN, upstream_retries=2
    ) as client:
        response = await client.post("/api/chat", json=BODY)
    assert (response.status_code, response.json()["code"]) == (502, "upstream_disconnected")
    assert fault_space.hits[posts] - before == 3  # the first try and two retries


async def test_an_app_error_is_not_retried(fault_space: FaultSpace) -> None:
    posts = "apperror POST /gradio_api/call/predict"
    before = fault_space.hits[posts]
    async with gateway_client(upstream_url=f"{fault_space.url}/apperror") as client:
        response = await client.post("/api/chat", json=BODY)
    assert response.json()["code"] == "upstream_error"
    assert fault_space.hits[posts] - before == 1  # the Space ran it: never twice


async def test_errors_the_space_raises_on_one_input_never_open_the_circuit(
    fault_space: FaultSpace,
) -> None:
    posts = "apperror POST /gradio_api/call/predict"
    before = fault_space.hits[posts]
    settings = {"circuit_failures": 2, "upstream_retries": 0, "cache_enabled": False}
    async with gateway_client(upstream_url=f"{fault_space.url}/apperror", **settings) as client:
        answers = [await client.post("/api/chat", json=BODY) for _ in range(4)]
    assert [r.json()["code"] for r in answers] == ["upstream_error"] * 4
    assert fault_space.hits[posts] - before == 4  # every request reached the Space


async def test_breaker_opens_fails_fast_then_probes_and_closes(fault_space: FaultSpace) -> None:
    posts = "outage POST /gradio_api/call/predict"
    settings = {"circuit_failures": 2, "circuit_cooldown": 0.5, "upstream_retries": 0}
    async with gateway_client(upstream_url=f"{fault_space.url}/outage", **settings) as client:
        fault_space.down.add("outage")
        try:
            failures = [await client.post("/api/chat", json=BODY) for _ in range(2)]
            calls = fault_space.hits[posts]
            fast = await client.post("/api/chat", json=BODY)
            ready = await client.get("/readyz")
            assert fault_space.hits[posts] == calls  # open: the upstream was not called
        finally:
            fault_space.down.discard("outage")
        recovered = await wait_for_status(client, 200, timeout=10)
        after = await client.post("/api/chat", json={"inputs": "and another question"})
    assert [r.json()["code"] for r in failures] == ["upstream_starting"] * 2
    assert (fast.status_code, fast.json()["code"]) == (503, "upstream_unavailable")
    assert fast.headers["retry-after"] == "1"
    assert "circuit open" in fast.json()["error"]
    assert (ready.status_code, ready.json()["code"]) == (503, "upstream_unavailable")
    assert recovered.status_code == 200 and after.status_code == 200


async def test_concurrency_bound_turns_excess_away_after_a_bounded_wait() -> None:
    async with gateway_client(
        mock_latency_ms=600, max_concurrency=1, queue_timeout=0.1, cache_enabled=False
    ) as client:
        first, second = await asyncio.gather(
            client.post("/api/chat", json=BODY),
            client.post("/api/chat", json={"inputs": "a different question"}),
        )
        later = await client.post("/api/chat", json=BODY)
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 503]
    busy = first if first.status_code == 503 else second
    assert busy.json()["code"] == "gateway_busy" and busy.headers["retry-after"] == "1"
    assert later.status_code == 200


async def test_a_waiting_request_gets_the_slot_when_it_frees() -> None:
    async with gateway_client(
        mock_latency_ms=200, max_concurrency=1, queue_timeout=5, cache_enabled=False
    ) as client:
        responses = await asyncio.gather(
            *(client.post("/api/chat", json={"inputs": f"question {i}"}) for i in range(3))
        )
    assert [r.status_code for r in responses] == [200, 200, 200]


@pytest.mark.parametrize("scenario", ["stall", "heartbeats"])
async def test_no_first_token_in_time_is_a_504(fault_space: FaultSpace, scenario: str) -> None:
    async with gateway_client(
        upstream_url=f"{fault_space.url}/{scenario}", upstream_first_token_timeout=0.4
    ) as client:
        response = await client.post("/api/chat", json={**BODY, "stream": True})
        ok = await client.get("/healthz")
    assert response.status_code == 504
    assert response.json()["code"] == "upstream_first_token_timeout"
    assert "0.4 s" in response.json()["error"]
    assert ok.status_code == 200


async def test_fallback_answers_from_the_mock_uncached(fault_space: FaultSpace) -> None:
    fault_space.down.add("fallback")
    try:
        async with gateway_client(
            upstream_url=f"{fault_space.url}/fallback", fallback="mock", upstream_retries=0
        ) as client:
            first = await client.post("/api/chat", json=BODY)
            second = await client.post("/api/chat", json=BODY)
            streamed = await client.post("/api/chat", json={**BODY, "stream": True})
    finally:
        fault_space.down.discard("fallback")
    for response in (first, second, streamed):
        assert response.status_code == 200
        assert response.headers["x-upstream"] == "mock-fallback"
        assert response.headers["x-cache"] == "BYPASS"  # never cached as the Space's answer
    assert first.json()["generated_text"]
    assert "event: done" in streamed.text


@pytest.fixture
def hub() -> Iterator[dict[str, str]]:
    """A fake Hub API: ``stages[space_id]`` is what it reports for that Space."""
    stages: dict[str, str] = {}

    async def runtime(request: Request) -> JSONResponse:
        space = f"{request.path_params['owner']}/{request.path_params['name']}"
        if space not in stages:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse({"stage": stages[space], "hardware": {"current": None}})

    app = Starlette(routes=[Route("/api/spaces/{owner}/{name}/runtime", runtime)])
    with ThreadServer(app) as server:
        stages["url"] = server.url
        yield stages


@pytest.mark.parametrize(
    ("stage", "status", "code", "words"),
    [
        ("BUILDING", 503, "upstream_starting", "is building"),
        ("SLEEPING", 503, "upstream_starting", "is sleeping"),
        ("PAUSED", 503, "upstream_unavailable", "must restart"),
        ("RUNNING", 503, "upstream_starting", "asleep, building or starting"),
    ],
)
async def test_the_hubs_runtime_stage_explains_a_cold_space(
    fault_space: FaultSpace, hub: dict[str, str], stage: str, status: int, code: str, words: str
) -> None:
    hub["owner/space"] = stage
    fault_space.down.add("cold")
    try:
        async with gateway_client(
            upstream_url=f"{fault_space.url}/cold",
            space_id="owner/space",
            hub_url=hub["url"],
            upstream_retries=0,
        ) as client:
            response = await client.post("/api/chat", json=BODY)
            ready = await client.get("/readyz")
    finally:
        fault_space.down.discard("cold")
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert words in response.json()["error"]
    assert "retry-after" in response.headers
    assert ready.status_code == 503 and ready.json()["code"] == code


def test_a_space_id_in_upstream_url_is_the_hub_id() -> None:
    from proxy.config.settings import Settings

    settings = Settings(upstream_url="health-org/llama-chat")
    assert settings.space_id == "health-org/llama-chat"
    assert settings.upstream_url == "https://health-org-llama-chat.hf.space"
