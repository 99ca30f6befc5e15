"""The cache as a browser sees it: X-Cache, Age, Cache-Control, errors never cached, and
single-flight, counted on a spy upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from proxy.core import cache as cache_module
from proxy.core.flights import Flights
from proxy.errors import UpstreamBusy
from tests.conftest import gateway_client
from tests.support.spy import SpyUpstream

BODY = {"inputs": "How can I sleep better?"}


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> SpyUpstream:
    upstream = SpyUpstream()
    monkeypatch.setattr("proxy.app.build_upstream", lambda settings: upstream)
    return upstream


@pytest.fixture
async def client(spy: SpyUpstream) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client() as c:
        yield c


async def post(client: httpx.AsyncClient, body: Any = BODY, **headers: str) -> httpx.Response:
    return await client.post("/api/chat", json=body, headers=headers)


async def test_miss_then_hit_with_age(client: httpx.AsyncClient, spy: SpyUpstream) -> None:
    first = await post(client)
    second = await post(client)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert "age" not in first.headers
    assert second.headers["age"] == "0"
    assert second.json() == first.json()
    assert second.headers["x-upstream"] == "spy"
    assert spy.calls == 1


async def test_defaults_spelled_out_hit_the_same_entry(
    client: httpx.AsyncClient, spy: SpyUpstream
) -> None:
    await post(client, {"inputs": "x"})
    again = await post(client, {"inputs": "x", "parameters": {"temperature": 0.7}})
    assert again.headers["x-cache"] == "HIT"
    assert spy.calls == 1


async def test_no_store_neither_reads_nor_writes(
    client: httpx.AsyncClient, spy: SpyUpstream
) -> None:
    await post(client)
    bypass = await post(client, **{"Cache-Control": "no-store"})
    assert bypass.headers["x-cache"] == "BYPASS"
    assert spy.calls == 2
    fresh = await post(client, {"inputs": "new question"}, **{"Cache-Control": "no-store"})
    after = await post(client, {"inputs": "new question"})
    assert fresh.headers["x-cache"] == "BYPASS"
    assert after.headers["x-cache"] == "MISS"


async def test_no_cache_refreshes_the_entry(client: httpx.AsyncClient, spy: SpyUpstream) -> None:
    await post(client)
    refreshed = await post(client, **{"Cache-Control": "no-cache"})
    assert refreshed.headers["x-cache"] == "MISS"
    assert spy.calls == 2
    assert (await post(client)).headers["x-cache"] == "HIT"
    assert spy.calls == 2


async def test_max_age_accepts_only_young_enough_entries(
    client: httpx.AsyncClient, spy: SpyUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    await post(client)
    real_time = cache_module.time.time
    monkeypatch.setattr(cache_module.time, "time", lambda: real_time() + 100)
    young = await post(client, **{"Cache-Control": "max-age=50"})
    assert young.headers["x-cache"] == "MISS"
    assert spy.calls == 2
    old_ok = await post(client, **{"Cache-Control": "max-age=500"})
    assert old_ok.headers["x-cache"] == "HIT"
    # The refreshed entry was written "now", 100 s after the first one.
    assert int(old_ok.headers["age"]) < 5


async def test_errors_are_never_cached(client: httpx.AsyncClient, spy: SpyUpstream) -> None:
    spy.failures = [UpstreamBusy("busy", retry_after=3)]
    failed = await post(client)
    assert failed.status_code == 503
    ok = await post(client)
    assert (ok.status_code, ok.headers["x-cache"]) == (200, "MISS")
    assert (await post(client)).headers["x-cache"] == "HIT"
    assert spy.calls == 2


async def test_cache_disabled_bypasses(spy: SpyUpstream) -> None:
    async with gateway_client(cache_enabled=False) as client:
        statuses = [(await post(client)).headers["x-cache"] for _ in range(2)]
    assert statuses == ["BYPASS", "BYPASS"]
    assert spy.calls == 2


async def test_concurrent_identical_misses_make_one_call(
    client: httpx.AsyncClient, spy: SpyUpstream
) -> None:
    spy.delay = 0.3
    responses = await asyncio.gather(*(post(client) for _ in range(20)))
    assert spy.calls == 1
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1


async def test_concurrent_identical_misses_share_the_error(
    client: httpx.AsyncClient, spy: SpyUpstream
) -> None:
    spy.delay = 0.3
    spy.failures = [UpstreamBusy("the upstream is busy", retry_after=9)]
    responses = await asyncio.gather(*(post(client) for _ in range(8)))
    assert spy.calls == 1
    assert {(r.status_code, r.headers["retry-after"]) for r in responses} == {(503, "9")}
    assert (await post(client)).headers["x-cache"] == "MISS"  # the error was not cached


async def until(condition: Callable[[], bool], *, timeout: float = 5) -> None:
    """Let the loop run until ``condition()`` holds, or fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0)


async def test_single_flight_survives_a_leader_that_leaves() -> None:
    flights: Flights[str] = Flights()
    calls = 0
    release = asyncio.Event()

    async def work() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "done"

    leader = asyncio.create_task(flights.run("k", work))
    await until(lambda: calls == 1)  # the leader is working
    follower = asyncio.create_task(flights.run("k", work))
    await asyncio.sleep(0)  # one step: the follower now waits on the leader's flight
    assert calls == 1 and len(flights) == 1
    leader.cancel()
    await until(lambda: calls == 2)  # the follower took over
    release.set()
    assert await follower == ("done", False)  # it ran the work itself
    assert leader.cancelled()
    assert len(flights) == 0


async def test_a_completed_stream_is_cached_and_a_hit_is_replayed_as_a_stream(
    client: httpx.AsyncClient, spy: SpyUpstream
) -> None:
    streamed = await post(client, {**BODY, "stream": True})
    assert streamed.headers["x-cache"] == "MISS"
    assert streamed.headers["content-type"].startswith("text/event-stream")
    plain = await post(client)
    assert plain.headers["x-cache"] == "HIT"
    assert spy.calls == 0 and spy.stream_calls == 1
    replay = await post(client, {**BODY, "stream": True})
    assert replay.headers["x-cache"] == "HIT"
    assert replay.text.count("event: token") > 10
    assert plain.json()["generated_text"] in replay.text.replace("\\n", "\n")


async def test_a_failed_stream_is_not_cached(client: httpx.AsyncClient, spy: SpyUpstream) -> None:
    spy.failures = [UpstreamBusy("busy", retry_after=2)]
    broken = await post(client, {**BODY, "stream": True})
    assert "event: error" in broken.text
    assert (await post(client)).headers["x-cache"] == "MISS"


async def test_delete_cache_needs_the_admin_token(spy: SpyUpstream) -> None:
    async with gateway_client() as client:
        assert (await client.delete("/api/cache")).status_code == 404
    async with gateway_client(admin_token="s3cret-admin") as client:
        await post(client)
        assert (await post(client)).headers["x-cache"] == "HIT"
        wrong = await client.delete("/api/cache", headers={"Authorization": "Bearer nope"})
        assert (wrong.status_code, wrong.json()["code"]) == (401, "unauthorized")
        assert wrong.headers["www-authenticate"] == "Bearer"
        ok = await client.delete("/api/cache", headers={"Authorization": "Bearer s3cret-admin"})
        assert ok.json() == {"status": "cleared", "entries": 1}
        assert (await post(client)).headers["x-cache"] == "MISS"


async def test_metrics_count_cache_outcomes(client: httpx.AsyncClient) -> None:
    await post(client)
    await post(client)
    await post(client, **{"Cache-Control": "no-store"})
    text = (await client.get("/metrics")).text
    assert 'proxy_cache_requests_total{result="miss"} 1.0' in text
    assert 'proxy_cache_requests_total{result="hit"} 1.0' in text
    assert 'proxy_cache_requests_total{result="bypass"} 1.0' in text
