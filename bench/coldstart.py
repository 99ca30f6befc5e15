"""Cold start, as a function platform pays it: from process start to the first answered
generation, against the floor measured in the same run: a process that only imports uvicorn
and Starlette. The bare Starlette app of bench/bare_app.py (imports, serves, answers) is a
second anchor.

Each process is started ``runs`` times, interleaved: the floor, the bare app, the gateway in
test mode, and the gateway with a Gradio upstream (the fake Space, started once beforehand),
each answering one ``POST /api/chat``. Run alone: ``python -m bench.coldstart``.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BODY = b'{"inputs": "How can I sleep better?"}'
TARGET = 2.0  # the gateway's cold start in test mode, at most this many times the floor
UPSTREAM_TARGET = 1.15  # with an upstream, at most this many times the floor plus aiohttp
FLOOR = "import uvicorn and Starlette (floor)"
# The floor plus the HTTP client every real upstream needs: aiohttp builds two TLS contexts
# (the system's CA bundle parsed twice) when it is imported.
WITH_AIOHTTP = "import uvicorn, Starlette and aiohttp"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(port: int) -> int | None:
    """The status of one POST /api/chat, or None while nothing listens."""
    request = (
        f"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n"
    ).encode() + BODY
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)
            head = sock.recv(64)
    except OSError:
        return None
    return int(head.split()[1]) if head.startswith(b"HTTP/") else None


def time_to_first_answer(command: list[str], port: int, env: dict[str, str]) -> float:
    """Seconds from starting ``command`` to its first 200 on POST /api/chat."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}")
            status = _post(port)
            if status == 200:
                return time.perf_counter() - started
            if status is not None:
                raise RuntimeError(f"{command} answered {status}")
            if time.perf_counter() - started > 30:
                raise RuntimeError(f"{command} did not answer within 30 s")
            time.sleep(0.002)
    finally:
        process.terminate()
        process.wait(10)


def time_to_import(env: dict[str, str], *extra: str) -> float:
    """Seconds from process start to the end of ``import uvicorn, starlette`` and ``extra``."""
    modules = ", ".join(("uvicorn", "starlette.applications", *extra))
    code = f"import {modules}, sys; sys.stdout.write('x')"
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE)  # fmt: skip
    assert process.stdout is not None
    process.stdout.read(1)
    elapsed = time.perf_counter() - started
    process.wait(10)
    return elapsed


@dataclass
class ColdStart:
    name: str
    median_ms: float
    runs_ms: list[float]


def measure(runs: int = 7) -> list[ColdStart]:
    # Bytecode compiled first, as a deploy's build leaves it: the processes measure start-up,
    # not compiling our sources (this machine sets PYTHONDONTWRITEBYTECODE).
    subprocess.run([sys.executable, "-m", "compileall", "-q", "proxy", "bench", "index.py"],
                   cwd=ROOT, check=True)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("UPSTREAM_URL", "REDIS_URL")}
    env.update(MOCK_TOKEN_DELAY_MS="0")
    space_port = _free_port()
    space = subprocess.Popen([sys.executable, "-m", "bench.fake_space", str(space_port), "0"],
                             cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
    gateway = [sys.executable, "-m", "proxy", "--port"]
    bare = [sys.executable, "-m", "bench.bare_app"]
    cases: list[tuple[str, Callable[[int], list[str]], dict[str, str]]] = [
        ("bare Starlette app, first answer", lambda p: [*bare, str(p)], env),
        ("gateway, test mode", lambda p: [*gateway, str(p)], env),
        ("gateway, Gradio upstream", lambda p: [*gateway, str(p)],
         {**env, "UPSTREAM_URL": f"http://127.0.0.1:{space_port}"}),
    ]  # fmt: skip
    try:
        while _post(space_port) is None and space.poll() is None:
            time.sleep(0.01)
        samples: dict[str, list[float]] = {FLOOR: [], WITH_AIOHTTP: []}
        samples.update({name: [] for name, _, _ in cases})
        for _ in range(runs):  # interleaved, so drift on the host hits every case alike
            samples[FLOOR].append(time_to_import(env) * 1000)
            samples[WITH_AIOHTTP].append(time_to_import(env, "aiohttp") * 1000)
            for name, command, case_env in cases:
                port = _free_port()
                samples[name].append(time_to_first_answer(command(port), port, case_env) * 1000)
    finally:
        space.terminate()
        space.wait(10)
    return [
        ColdStart(name, statistics.median(values), [round(v, 1) for v in values])
        for name, values in samples.items()
    ]


def report(results: list[ColdStart]) -> list[str]:
    floor = results[0].median_ms
    lines = ["| cold start: process start to first answer | median ms | vs the floor | target |",
             "|---|---|---|---|"]  # fmt: skip
    with_aiohttp = next((r.median_ms for r in results if r.name == WITH_AIOHTTP), floor)
    for result in results:
        ratio = result.median_ms / floor
        target = ""
        if result.name.startswith("gateway"):
            # Test mode against the floor; with an upstream against the floor plus aiohttp,
            # which every real upstream needs.
            upstream = "test mode" not in result.name
            base, limit = (with_aiohttp, UPSTREAM_TARGET) if upstream else (floor, TARGET)
            own = result.median_ms / base
            against = "the floor + aiohttp" if upstream else "the floor"
            verdict = "met" if own <= limit else "missed"
            target = f"≤ {limit:g}× {against}: {own:.2f}×, {verdict}"
        lines.append(f"| {result.name} | {result.median_ms:,.0f} | {ratio:.2f}× | {target} |")
    return lines


if __name__ == "__main__":
    print("\n".join(report(measure())))
