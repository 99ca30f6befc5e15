"""A thundering herd: N identical streams sent at once to the gateway in front of a slow fake
Space (300 ms to the first word, then a word every 50 ms), for N = 1, 10 and 100.

For each N it reports the upstream generations made (from the gateway's own
``proxy_upstream_duration_seconds_count``: one is the promise), the time to first token of the
leader (the ``MISS``) and of the followers (``JOINED``, p50 and max), and the gateway's resident
memory before and after. Run alone with ``python -m bench.herd``; ``python -m bench`` runs it too.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx

ROOT = Path(__file__).resolve().parents[1]
SIZES = (1, 10, 100)
FIRST_WORD_MS = 300
WORD_GAP_MS = 50


@dataclass
class Herd:
    size: int
    generations: float
    leader_ttft_ms: float
    followers_ttft_p50_ms: float | None
    followers_ttft_max_ms: float | None
    joined: int
    rss_before_mb: float
    rss_after_mb: float


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _wait(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up within {timeout} s")


def _generations(gateway: str) -> float:
    text = httpx.get(f"{gateway}/metrics").text
    found = re.search(r"^proxy_upstream_duration_seconds_count (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def _one(session: aiohttp.ClientSession, gateway: str, prompt: str) -> tuple[str, float]:
    started = time.perf_counter()
    async with session.post(f"{gateway}/api/chat", json={"inputs": prompt, "stream": True}) as resp:
        cache = resp.headers.get("X-Cache", "-")
        first = None
        async for line in resp.content:
            if first is None and line.startswith(b"event: token"):
                first = time.perf_counter() - started
        assert resp.status == 200 and first is not None, resp.status
    return cache, first * 1000


async def _herd(gateway: str, size: int) -> list[tuple[str, float]]:
    prompt = f"How can I sleep better? ({uuid.uuid4().hex[:8]})"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        return list(await asyncio.gather(*(_one(session, gateway, prompt) for _ in range(size))))


def measure() -> list[Herd]:
    space_port, port = _free_port(), _free_port()
    space = subprocess.Popen(
        [sys.executable, "-m", "bench.fake_space", str(space_port), str(FIRST_WORD_MS),
         str(WORD_GAP_MS)],
        cwd=ROOT,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
        "UPSTREAM_URL": f"http://127.0.0.1:{space_port}",
        "RATE_LIMIT": "off",
        "ACCESS_LOG": "0",
        "PORT": str(port),
    }
    gateway = subprocess.Popen(
        [sys.executable, "-m", "proxy"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    herds = []
    try:
        _wait(f"{url}/readyz")
        asyncio.run(_herd(url, 1))  # warm-up: connections and the first request's imports
        for size in SIZES:
            before, rss_before = _generations(url), _rss_mb(gateway.pid)
            replies = asyncio.run(_herd(url, size))
            leader = [ms for cache, ms in replies if cache == "MISS"]
            followers = [ms for cache, ms in replies if cache == "JOINED"]
            herds.append(
                Herd(
                    size=size,
                    generations=_generations(url) - before,
                    leader_ttft_ms=leader[0] if leader else float("nan"),
                    followers_ttft_p50_ms=statistics.median(followers) if followers else None,
                    followers_ttft_max_ms=max(followers) if followers else None,
                    joined=len(followers),
                    rss_before_mb=rss_before,
                    rss_after_mb=_rss_mb(gateway.pid),
                )
            )
    finally:
        for process in (gateway, space):
            process.terminate()
            process.wait(10)
    return herds


def report(herds: list[Herd]) -> list[str]:
    lines = [
        f"Identical concurrent streams against a slow fake Space ({FIRST_WORD_MS} ms to the first "
        f"word, {WORD_GAP_MS} ms a word):",
        "",
        "| streams | upstream generations | joined | leader's first token | followers' first "
        "token, p50 / max | gateway memory before → after |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for herd in herds:
        followers = (
            f"{herd.followers_ttft_p50_ms:.0f} / {herd.followers_ttft_max_ms:.0f} ms"
            if herd.followers_ttft_p50_ms is not None and herd.followers_ttft_max_ms is not None
            else "—"
        )
        lines.append(
            f"| {herd.size} | {herd.generations:.0f} | {herd.joined} | "
            f"{herd.leader_ttft_ms:.0f} ms | {followers} | "
            f"{herd.rss_before_mb:.1f} → {herd.rss_after_mb:.1f} MiB |"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(report(measure())))
