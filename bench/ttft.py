"""Paired latencies on one connection: a whole generation and the time to first token, read
straight from the fake Space and through the gateway.

Requests are interleaved so both paths see the same machine state. The gateway path asks
``Cache-Control: no-store`` so every request reaches the Space.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
import orjson


async def _submit(session: aiohttp.ClientSession, space: str, endpoint: str) -> str:
    """The queue API's first step: the event id of a new call to ``endpoint``."""
    async with session.post(
        f"{space}/gradio_api/call/{endpoint}", json={"data": ["How can I sleep better?", 64]}
    ) as resp:
        return str(orjson.loads(await resp.read())["event_id"])


async def _direct(session: aiohttp.ClientSession, space: str) -> float:
    started = time.perf_counter()
    event_id = await _submit(session, space, "predict_stream")
    async with session.get(f"{space}/gradio_api/call/predict_stream/{event_id}") as resp:
        async for line in resp.content:
            if line.startswith(b"event: generating"):
                first = time.perf_counter() - started
                break
        await resp.read()
    return first


async def _gateway(session: aiohttp.ClientSession, gateway: str) -> float:
    started = time.perf_counter()
    async with session.post(
        f"{gateway}/api/chat",
        json={"inputs": "How can I sleep better?", "stream": True},
        headers={"Cache-Control": "no-store"},
    ) as resp:
        async for line in resp.content:
            if line.startswith(b"event: token"):
                first = time.perf_counter() - started
                break
        await resp.read()
    return first


async def _direct_generation(session: aiohttp.ClientSession, space: str) -> float:
    started = time.perf_counter()
    event_id = await _submit(session, space, "predict")
    async with session.get(f"{space}/gradio_api/call/predict/{event_id}") as resp:
        body = await resp.read()
    assert b"event: complete" in body
    return time.perf_counter() - started


async def _gateway_generation(session: aiohttp.ClientSession, gateway: str) -> float:
    started = time.perf_counter()
    async with session.post(
        f"{gateway}/api/chat",
        json={"inputs": "How can I sleep better?"},
        headers={"Cache-Control": "no-store"},
    ) as resp:
        await resp.read()
        assert resp.status == 200
    return time.perf_counter() - started


Probe = Callable[[aiohttp.ClientSession, str], Awaitable[float]]


async def measure(space: str, gateway: str, count: int, *, stream: bool) -> dict[str, float]:
    """p50/p99 in ms, direct and through the gateway: time to first token when ``stream``,
    else the whole generation."""
    direct_probe: Probe = _direct if stream else _direct_generation
    gateway_probe: Probe = _gateway if stream else _gateway_generation
    direct: list[float] = []
    through: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(20):  # warm-up
            await direct_probe(session, space)
            await gateway_probe(session, gateway)
        for _ in range(count):
            direct.append(await direct_probe(session, space))
            through.append(await gateway_probe(session, gateway))

    def pct(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1] * 1000

    return {
        "direct_p50_ms": statistics.median(direct) * 1000,
        "gateway_p50_ms": statistics.median(through) * 1000,
        "direct_p99_ms": pct(direct, 99),
        "gateway_p99_ms": pct(through, 99),
        "added_p50_ms": (statistics.median(through) - statistics.median(direct)) * 1000,
    }


def run(space: str, gateway: str, count: int = 300, *, stream: bool = True) -> dict[str, float]:
    return asyncio.run(measure(space, gateway, count, stream=stream))
