"""Time to first token, read straight from the fake Space and through the gateway.

One connection, requests interleaved so both paths see the same machine state. The gateway
path asks ``Cache-Control: no-store`` so every request streams from the Space.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp
import orjson


async def _direct(session: aiohttp.ClientSession, space: str) -> float:
    started = time.perf_counter()
    async with session.post(
        f"{space}/gradio_api/call/predict_stream", json={"data": ["How can I sleep better?", 64]}
    ) as resp:
        event_id = orjson.loads(await resp.read())["event_id"]
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


async def measure(space: str, gateway: str, count: int) -> dict[str, float]:
    """p50/p99 time to first token in ms, direct and through the gateway."""
    direct: list[float] = []
    through: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(20):  # warm-up
            await _direct(session, space)
            await _gateway(session, gateway)
        for _ in range(count):
            direct.append(await _direct(session, space))
            through.append(await _gateway(session, gateway))

    def pct(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1] * 1000

    return {
        "direct_p50_ms": statistics.median(direct) * 1000,
        "gateway_p50_ms": statistics.median(through) * 1000,
        "direct_p99_ms": pct(direct, 99),
        "gateway_p99_ms": pct(through, 99),
        "added_p50_ms": (statistics.median(through) - statistics.median(direct)) * 1000,
    }


def run(space: str, gateway: str, count: int = 300) -> dict[str, float]:
    return asyncio.run(measure(space, gateway, count))
