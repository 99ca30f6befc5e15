"""The gateway as operated: rate limits shared by two processes through a real redis-server,
the JSON access log of a real process, and in-flight requests finishing on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import threading

import httpx
import pytest

from tests.conftest import gateway_client
from tests.e2e.conftest import audited_client
from tests.support.audit import API_KEY
from tests.support.processes import clean_env, gateway_command, running
from tests.support.redis_server import RedisServer
from tests.support.servers import free_port, wait_until

pytestmark = pytest.mark.e2e

SECRET_PROMPT = "my private symptom is zebra-elbow-7731"


def test_two_processes_share_one_rate_limit_through_redis(redis_server: RedisServer) -> None:
    port_a, port_b = free_port(), free_port()
    env = clean_env(REDIS_URL=redis_server.url, RATE_LIMIT="4/minute", CACHE_ENABLED="0")
    with (
        running(gateway_command(port_a), env, port_a) as a,
        running(gateway_command(port_b), env, port_b) as b,
    ):
        statuses = []
        for i in range(6):
            with audited_client((a if i % 2 else b).url) as client:
                response = client.post("/api/chat", json={"inputs": f"question {i}"})
            statuses.append(response.status_code)
        remaining = response.headers.get("ratelimit-remaining")
    # Four in all, whichever instance served them.
    assert statuses == [200, 200, 200, 200, 429, 429]
    assert remaining == "0"


def test_memory_limits_are_per_process() -> None:
    port_a, port_b = free_port(), free_port()
    env = clean_env(RATE_LIMIT="2/minute")
    with (
        running(gateway_command(port_a), env, port_a) as a,
        running(gateway_command(port_b), env, port_b) as b,
    ):
        statuses = []
        for gateway in (a, a, a, b):
            with audited_client(gateway.url) as client:
                statuses.append(client.post("/api/chat", json={"inputs": "hi"}).status_code)
    assert statuses == [200, 200, 429, 200]


def test_json_access_log_one_line_per_request_and_no_secrets() -> None:
    port = free_port()
    env = clean_env(LOG_FORMAT="json", API_KEYS=API_KEY, RATE_LIMIT="off")
    with running(gateway_command(port), env, port) as gateway:
        with audited_client(gateway.url) as client:
            ok = client.post(
                "/api/chat",
                json={"inputs": SECRET_PROMPT},
                headers={"Authorization": f"Bearer {API_KEY}", "X-Request-ID": "trace-42"},
            )
            refused = client.post("/api/chat", json={"inputs": SECRET_PROMPT})
            client.get("/healthz")
        wait_until(
            lambda: '"route":"/healthz","status":200' in gateway.read_output().rsplit("401", 1)[-1],
            timeout=10,
            what="three access-log lines",
        )
        output = gateway.read_output()
    assert ok.status_code == 200 and refused.status_code == 401
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    # The last three: before them, the start-up wait polled /healthz.
    access = [e for e in entries if e["logger"] == "proxy.access"][-3:]
    assert [(e["route"], e["status"]) for e in access] == [
        ("/api/chat", 200),
        ("/api/chat", 401),
        ("/healthz", 200),
    ]
    first = access[0]
    assert first["request_id"] == "trace-42" and first["method"] == "POST"
    assert first["cache"] == "MISS" and first["upstream"] == "mock"
    assert first["duration_ms"] > 0 and first["upstream_ms"] is not None
    assert SECRET_PROMPT not in output and "zebra" not in output
    assert API_KEY not in output


def test_in_flight_requests_finish_on_sigterm() -> None:
    port = free_port()
    env = clean_env(MOCK_LATENCY_MS="1500", GRACEFUL_TIMEOUT="10")
    with running(gateway_command(port), env, port) as gateway:
        result: list[httpx.Response] = []

        def slow_request() -> None:
            with httpx.Client(timeout=30) as client:
                result.append(client.post(f"{gateway.url}/api/chat", json={"inputs": "slow"}))

        worker = threading.Thread(target=slow_request)
        worker.start()

        def in_flight() -> bool:
            metrics = httpx.get(f"{gateway.url}/metrics", timeout=5).text
            line = next(x for x in metrics.splitlines() if x.startswith("proxy_in_flight"))
            return float(line.split()[-1]) >= 2  # the slow request and this one

        wait_until(in_flight, timeout=10, what="the request to be in flight")
        os.killpg(gateway.process.pid, signal.SIGTERM)
        worker.join(30)
        gateway.process.wait(15)
    assert result and result[0].status_code == 200
    assert result[0].json()["generated_text"]


async def test_shutdown_closes_every_redis_connection(redis_server: RedisServer) -> None:
    """Limits and cache through Redis: after the lifespan ends no connection of the gateway's
    is left open on the server (a function platform freezes or ends instances often)."""
    checker = redis_server.client()

    def others() -> int:
        return len(checker.client_list()) - 1  # every connection but the checker's own

    async with gateway_client(redis_url=redis_server.url, rate_limit="100/minute") as client:
        for question in ("Tips for sleep?", "Tips for sleep?", "How much water?"):
            response = await client.post("/api/chat", json={"inputs": question})
            assert response.status_code == 200
            assert "ratelimit-remaining" in response.headers
        assert others() >= 1
    wait_until(lambda: others() == 0, timeout=5, what="the gateway's Redis connections to close")
