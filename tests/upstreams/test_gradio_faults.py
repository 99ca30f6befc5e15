"""Upstream failures a real Gradio app cannot make on demand, from a scripted fake Space.

Each asserts what the browser gets: status, stable code, Retry-After where it helps, and a
message that names no token.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import gateway_client
from tests.support.audit import TOKEN
from tests.support.fault_space import FaultSpace
from tests.support.servers import free_port

BODY = {"inputs": "How can I sleep better?"}


async def ask(space_url: str, **settings: object) -> tuple[int, dict[str, str], dict[str, str]]:
    values = {"upstream_url": space_url, "hf_token": TOKEN, "upstream_connect_timeout": 2.0}
    values.update(settings)
    async with gateway_client(**values) as client:
        response = await client.post("/api/chat", json=BODY)
    return response.status_code, response.json(), dict(response.headers)


async def test_control_scenario_works(fault_space: FaultSpace) -> None:
    status, body, headers = await ask(f"{fault_space.url}/ok")
    assert status == 200
    assert body.pop("usage")["estimated"] is True
    assert body == {"generated_text": "Hello from the fault space", "model": "llama-2-7b-chat"}
    assert headers["x-upstream"] == "gradio"


@pytest.mark.parametrize(
    ("scenario", "status", "code", "retry_after", "words"),
    [
        ("reset", 502, "upstream_disconnected", None, "closed the connection"),
        ("garbage", 502, "upstream_bad_response", None, "no event_id"),
        ("asleep", 503, "upstream_starting", "20", "asleep, building or starting"),
        ("html200", 503, "upstream_starting", "10", "not JSON"),
        ("busy", 503, "upstream_busy", "7", "busy"),
        ("ratelimit", 429, "upstream_rate_limited", "42", "rate limiting"),
        ("apperror", 502, "upstream_error", None, "CUDA out of memory"),
        ("apperror_null", 502, "upstream_error", None, "show_error=True"),
        ("quota", 429, "upstream_quota", "60", "GPU quota"),
        ("quota_named", 429, "upstream_quota", "322", "Retry in 0:05:22"),
        ("private", 502, "upstream_auth", None, "HF_TOKEN"),
        ("reset_stream", 502, "upstream_disconnected", None, "closed"),
        ("nocomplete", 502, "upstream_disconnected", None, "before completing"),
        ("badevent", 502, "upstream_bad_response", None, "not JSON"),
    ],
)
async def test_fault_maps_to_specific_error(
    fault_space: FaultSpace,
    scenario: str,
    status: int,
    code: str,
    retry_after: str | None,
    words: str,
) -> None:
    got_status, body, headers = await ask(f"{fault_space.url}/{scenario}")
    assert (got_status, body["code"]) == (status, code), body
    assert words in body["error"]
    assert headers.get("retry-after") == retry_after
    assert TOKEN not in str(body)


@pytest.mark.parametrize(
    ("scenario", "status", "code"),
    [
        ("reset", 502, "upstream_disconnected"),
        ("garbage", 502, "upstream_bad_response"),
        ("busy", 503, "upstream_busy"),
        ("ratelimit", 429, "upstream_rate_limited"),
        ("apperror", 502, "upstream_error"),
        ("reset_stream", 502, "upstream_disconnected"),
        ("badevent", 502, "upstream_bad_response"),
        ("heartbeats", 504, "upstream_timeout"),
        ("stall", 504, "upstream_timeout"),
        # Down already at start-up: discovery is retried at most every 2 s.
        ("asleep", 503, "upstream_starting"),
        ("html200", 503, "upstream_starting"),
        ("private", 502, "upstream_auth"),
    ],
)
async def test_the_next_request_works_once_the_fault_is_gone(
    fault_space: FaultSpace, scenario: str, status: int, code: str
) -> None:
    """One gateway, one upstream: a fault, then the same Space healthy again."""
    settings = {
        "upstream_timeout": 1.5,
        "upstream_read_timeout": 0.5,
        "upstream_retries": 0,
        "rate_limit": "off",  # the polling below is not a client to limit
    }
    rediscovers = scenario in ("asleep", "html200", "private")
    fault_space.switch = scenario
    try:
        async with gateway_client(
            upstream_url=f"{fault_space.url}/switch", hf_token=TOKEN, **settings
        ) as client:
            failed = await client.post("/api/chat", json=BODY)
            fault_space.switch = "ok"
            recovered = await client.post("/api/chat", json=BODY)
            deadline = time.monotonic() + 5
            while rediscovers and recovered.status_code != 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                recovered = await client.post("/api/chat", json=BODY)
    finally:
        fault_space.switch = "ok"
    assert (failed.status_code, failed.json()["code"]) == (status, code)
    assert recovered.status_code == 200, recovered.text
    assert recovered.json()["generated_text"] == "Hello from the fault space"


async def test_unreachable_upstream_is_502(fault_space: FaultSpace) -> None:
    status, body, _ = await ask(f"http://127.0.0.1:{free_port()}")
    assert (status, body["code"]) == (502, "upstream_unreachable")
    assert "UPSTREAM_URL" in body["error"]


async def test_heartbeats_forever_hit_the_total_deadline(fault_space: FaultSpace) -> None:
    started = time.monotonic()
    status, body, _ = await ask(
        f"{fault_space.url}/heartbeats", upstream_timeout=1.0, upstream_read_timeout=0.5
    )
    assert (status, body["code"]) == (504, "upstream_timeout")
    assert time.monotonic() - started < 5


async def test_silence_hits_the_read_timeout(fault_space: FaultSpace) -> None:
    started = time.monotonic()
    status, body, _ = await ask(
        f"{fault_space.url}/stall", upstream_timeout=30.0, upstream_read_timeout=0.5
    )
    assert (status, body["code"]) == (504, "upstream_timeout")
    assert time.monotonic() - started < 5


async def test_a_503_burst_is_retried_and_succeeds(fault_space: FaultSpace) -> None:
    url = f"{fault_space.url}/flaky"
    posts = "flaky POST /gradio_api/call/predict"
    before = fault_space.hits[posts]
    async with gateway_client(upstream_url=url, hf_token=TOKEN) as client:
        response = await client.post("/api/chat", json=BODY)
    assert response.status_code == 200, response.text
    assert fault_space.hits[posts] - before == 2  # the 503, then the retry


async def test_busy_without_retries_then_recovered(fault_space: FaultSpace) -> None:
    url = f"{fault_space.url}/flaky"
    async with gateway_client(upstream_url=url, hf_token=TOKEN, upstream_retries=0) as client:
        first = await client.post("/api/chat", json=BODY)
        not_ready = await client.get("/readyz")
        second = await client.post("/api/chat", json=BODY)
        ready = await client.get("/readyz")
    assert (first.status_code, first.json()["code"]) == (503, "upstream_busy")
    assert (not_ready.status_code, not_ready.json()["code"]) == (503, "upstream_busy")
    assert second.status_code == 200
    assert ready.status_code == 200, "a successful call makes the gateway ready again"


async def test_token_sent_as_x_hf_authorization_and_client_auth_never(
    fault_space: FaultSpace,
) -> None:
    url = f"{fault_space.url}/ok"
    async with gateway_client(upstream_url=url, hf_token=TOKEN) as client:
        response = await client.post(
            "/api/chat", json=BODY, headers={"Authorization": "Bearer browser-token"}
        )
    assert response.status_code == 200
    upstream_requests = [r for r in fault_space.requests if r[1].startswith("/ok/")]
    assert upstream_requests
    for _method, _target, headers in upstream_requests:
        assert headers["x-hf-authorization"] == f"Bearer {TOKEN}"
        assert "authorization" not in headers


async def test_no_token_configured_sends_no_auth_header(fault_space: FaultSpace) -> None:
    before = len(fault_space.requests)
    async with gateway_client(upstream_url=f"{fault_space.url}/ok") as client:
        assert (await client.post("/api/chat", json=BODY)).status_code == 200
    for _method, _target, headers in fault_space.requests[before:]:
        assert "x-hf-authorization" not in headers


async def test_readyz_reports_discovery_failure_and_recovers_lazily(
    fault_space: FaultSpace,
) -> None:
    async with gateway_client(upstream_url=f"{fault_space.url}/asleep") as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["code"] == "upstream_starting"
    async with gateway_client(upstream_url=f"{fault_space.url}/ok") as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert "/predict" in response.json()["detail"]


@pytest.mark.parametrize(
    "scenario", ["echo400", "echo422", "echo429", "echo500", "echo503", "echoevent"]
)
async def test_a_space_that_echoes_headers_never_leaks_the_token(
    fault_space: FaultSpace, scenario: str
) -> None:
    # The Space puts every header it received, the token's among them, in its error text.
    async with gateway_client(
        upstream_url=f"{fault_space.url}/{scenario}", hf_token=TOKEN, upstream_retries=0
    ) as client:
        answers = [
            await client.post("/api/chat", json={"inputs": "echo me"}),
            await client.post("/api/chat", json={"inputs": "echo me", "stream": True}),
            await client.post("/api/predict", json={"inputs": "echo me too"}),
            await client.post("/v1/chat/completions", json={
                "model": "llama-2-7b-chat", "messages": [{"role": "user", "content": "echo"}]}),
            await client.post("/v1/chat/completions", json={"stream": True,
                "model": "llama-2-7b-chat", "messages": [{"role": "user", "content": "echo 2"}]}),
            await client.get("/readyz"),
        ]  # fmt: skip
    assert fault_space.requests[-1][2]["x-hf-authorization"] == f"Bearer {TOKEN}"
    for answer in answers:
        assert TOKEN not in answer.text
    assert answers[0].status_code >= 400
    assert "got headers" in answers[0].text  # the Space's explanation still reaches the user
    assert "Bearer [redacted]" in answers[0].text


async def test_a_short_retry_after_from_a_space_is_waited_out(fault_space: FaultSpace) -> None:
    posts = "brief429 POST /gradio_api/call/predict"
    before = fault_space.hits[posts]
    async with gateway_client(upstream_url=f"{fault_space.url}/brief429") as client:
        started = time.monotonic()
        response = await client.post("/api/chat", json=BODY)
        took = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert fault_space.hits[posts] - before == 2
    assert took >= 1.8  # its Retry-After: 2, not a quick back-off


async def test_a_full_queue_said_in_an_error_event_is_retried(fault_space: FaultSpace) -> None:
    posts = "busyevent POST /gradio_api/call/predict"
    before = fault_space.hits[posts]
    async with gateway_client(upstream_url=f"{fault_space.url}/busyevent") as client:
        response = await client.post("/api/chat", json=BODY)
    async with gateway_client(
        upstream_url=f"{fault_space.url}/busyevent", upstream_retries=0
    ) as client:
        refused = await client.post("/api/chat", json=BODY)
    assert response.status_code == 200, response.text
    assert fault_space.hits[posts] - before == 3  # the busy answer, its retry, then one more
    assert (refused.status_code, refused.json()["code"]) == (503, "upstream_busy")
    assert "Queue is full" in refused.json()["error"]
