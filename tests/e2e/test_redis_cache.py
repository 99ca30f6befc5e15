"""The cache across instances with a real redis-server, and single-flight against a slow real
Gradio app that counts its calls."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from proxy.core.cache import cache_key
from proxy.core.catalog import Catalog
from proxy.routes.bodies import to_generation_request
from tests.conftest import gateway_client
from tests.e2e.conftest import GradioServer, audited_client
from tests.support.bodies import chat_body
from tests.support.processes import Gateway, clean_env, gateway_command, running
from tests.support.redis_server import RedisServer
from tests.support.servers import free_port, wait_for, wait_until
from tests.support.spy import SpyUpstream

pytestmark = pytest.mark.e2e


def two_gateways(**env: str) -> tuple[int, int, dict[str, str]]:
    return free_port(), free_port(), clean_env(**env)


def ask(gateway: Gateway, body: dict[str, object]) -> httpx.Response:
    with audited_client(gateway.url) as client:
        return client.post("/api/chat", json=body)


def test_two_gateway_processes_share_entries(redis_server: RedisServer) -> None:
    port_a, port_b, env = two_gateways(REDIS_URL=redis_server.url)
    with (
        running(gateway_command(port_a), env, port_a) as a,
        running(gateway_command(port_b), env, port_b) as b,
    ):
        first = ask(a, {"inputs": "How much water should I drink?"})
        second = ask(b, {"inputs": "How much water should I drink?"})
        third = ask(b, {"inputs": "Tips for stress?"})
        fourth = ask(a, {"inputs": "Tips for stress?"})
    assert [r.headers["x-cache"] for r in (first, second, third, fourth)] == [
        "MISS",
        "HIT",
        "MISS",
        "HIT",
    ]
    assert second.json() == first.json()
    keys = redis_server.client().keys("proxy:v1:cache:*")
    assert len(keys) == 2
    assert all(b"water" not in key and b"stress" not in key for key in keys)


def test_redis_killed_then_restarted(redis_server: RedisServer) -> None:
    port_a, port_b, env = two_gateways(REDIS_URL=redis_server.url)
    body = {"inputs": "How do I treat a cold?"}
    with (
        running(gateway_command(port_a), env, port_a) as a,
        running(gateway_command(port_b), env, port_b) as b,
    ):
        assert ask(a, body).headers["x-cache"] == "MISS"
        redis_server.kill()
        started = time.monotonic()
        down = [ask(gw, body) for gw in (a, b, a, b, a)]
        assert time.monotonic() - started < 5
        assert [(r.status_code, r.headers["x-cache"]) for r in down] == [(200, "BYPASS")] * 5
        # One warning per interval, however many requests were affected.
        assert a.read_output().count("cache unavailable") == 1

        redis_server.start()
        recovered = wait_until(
            lambda: ask(a, body).headers["x-cache"] != "BYPASS", timeout=10, what="recovery"
        )
        assert recovered
        # B recovers by itself too, once its own short cool-down has passed.
        wait_until(lambda: ask(b, body).headers["x-cache"] == "HIT", timeout=10, what="a hit on B")


def test_frozen_redis_is_skipped_quickly(redis_server: RedisServer) -> None:
    port = free_port()
    with running(gateway_command(port), clean_env(REDIS_URL=redis_server.url), port) as gw:
        redis_server.freeze()
        try:
            started = time.monotonic()
            responses = [ask(gw, {"inputs": f"question {i}"}) for i in range(5)]
            elapsed = time.monotonic() - started
        finally:
            redis_server.thaw()
        assert [r.headers["x-cache"] for r in responses] == ["BYPASS"] * 5
        assert elapsed < 3  # one short timeout, then the cool-down skips Redis
        wait_until(
            lambda: ask(gw, {"inputs": "after"}).headers["x-cache"] != "BYPASS",
            timeout=10,
            what="recovery after thaw",
        )
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert 'proxy_cache_backend_errors_total{backend="redis"}' in metrics


def calls_with(server: GradioServer, marker: str) -> int:
    return sum(marker in entry["tail"] for entry in server.received())


def concurrent(url: str, body: dict[str, object], count: int) -> list[httpx.Response]:
    def one(_: int) -> httpx.Response:
        with audited_client(url) as client:
            return client.post("/api/chat", json=body)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_single_flight_twenty_identical_requests_one_space_call(
    gradio_server: GradioServer,
) -> None:
    marker = f"SLOW {uuid.uuid4().hex[:8]}"
    port = free_port()
    env = clean_env(UPSTREAM_URL=f"{gradio_server.url}/full")
    with running(gateway_command(port), env, port) as gw:
        responses = concurrent(gw.url, {"inputs": marker}, 20)
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["generated_text"] for r in responses}) == 1
    assert calls_with(gradio_server, marker) == 1


def test_single_flight_across_two_instances_through_redis(
    gradio_server: GradioServer, redis_server: RedisServer
) -> None:
    marker = f"SLOW {uuid.uuid4().hex[:8]}"
    port_a, port_b, env = two_gateways(
        UPSTREAM_URL=f"{gradio_server.url}/full", REDIS_URL=redis_server.url
    )
    with (
        running(gateway_command(port_a), env, port_a) as a,
        running(gateway_command(port_b), env, port_b) as b,
    ):
        with ThreadPoolExecutor(2) as pool:
            batches = list(pool.map(lambda gw: concurrent(gw.url, {"inputs": marker}, 10), (a, b)))
    responses = batches[0] + batches[1]
    assert [r.status_code for r in responses] == [200] * 20
    assert len({r.json()["generated_text"] for r in responses}) == 1
    assert calls_with(gradio_server, marker) == 1


async def test_a_waiter_proceeds_when_the_lock_holder_died(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = SpyUpstream()
    monkeypatch.setattr("proxy.app.build_upstream", lambda settings: spy)
    body = {"inputs": "Is coffee bad for sleep?"}
    req = to_generation_request(
        chat_body(**body),
        Catalog(default="llama-2-7b-chat"),
        max_prompt_chars=16000,
        max_new_tokens_limit=1024,
        system_prompt=None,
        cache_scope="ip:127.0.0.1",  # the entry of this client (httpx's ASGI transport's address)
    )
    # Another instance took the lock and died: nobody will ever fill the entry.
    lock = f"proxy:v1:lock:{cache_key(req, spy.identity)}"
    async with gateway_client(redis_url=redis_server.url, cache_lock_timeout=5) as client:
        redis_server.client().set(lock, "dead-instance", px=1000)
        started = time.monotonic()
        response = await client.post("/api/chat", json=body)
        waited = time.monotonic() - started
    assert (response.status_code, response.headers["x-cache"]) == (200, "MISS")
    assert spy.calls == 1
    assert 0.8 < waited < 4  # it waited for the dead lock to expire, not for the whole bound


async def test_a_generation_longer_than_the_locks_life_is_made_once(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader renews its lock while it generates, so another instance keeps waiting for
    the entry instead of generating it too once CACHE_LOCK_TIMEOUT has passed."""
    spy = SpyUpstream(delay=1.6)  # more than three times the lock's time to live
    monkeypatch.setattr("proxy.app.build_upstream", lambda settings: spy)
    body = {"inputs": f"How long should a nap be? {uuid.uuid4().hex[:8]}"}
    settings = {"redis_url": redis_server.url, "cache_lock_timeout": 0.5}
    redis = redis_server.client()
    async with gateway_client(**settings) as a, gateway_client(**settings) as b:
        leader = asyncio.create_task(a.post("/api/chat", json=body))
        await wait_for(lambda: redis.keys("proxy:v1:lock:*"), timeout=5, what="A's lock")
        follower = await b.post("/api/chat", json=body)
        first = await leader
    assert spy.calls == 1
    assert (first.headers["x-cache"], follower.headers["x-cache"]) == ("MISS", "HIT")
    assert follower.json()["generated_text"] == first.json()["generated_text"]
