"""``python -m bench``: what the gateway costs, measured in one run on this machine.

The gateway runs as deployed (the Procfile's ``python -m proxy``, default settings) pinned to
core 0 with ``taskset``; the fake Space (``bench/fake_space.py``) and the load generator
(``wrk``) share core 1. Each load is warmed up, then run one to five times; the median run is
reported. Cache hits and misses are measured through the same gateway process.
Results are printed as a table and saved as JSON under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench import ttft

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# Each wrk run passes a fresh run id, so no body repeats across runs (or the cache would
# turn later "misses" into hits).
UNIQUE_BODIES = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
run = ""
init = function(args)
  run = args[1]
end
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil,
    '{"inputs": "How can I sleep better? ' .. run .. '-' .. counter ..
    '", "parameters": {"max_new_tokens": 64}}')
end
"""
SAME_BODY = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs": "How can I sleep better?", "parameters": {"max_new_tokens": 64}}'
"""


@dataclass
class Load:
    name: str
    script: str  # UNIQUE_BODIES (every request a cache miss) or SAME_BODY (hits)
    connections: int
    runs: int
    ideal_rps: float | None = None


@dataclass
class Setup:
    """One gateway process (and fake Space) serving several loads in turn."""

    upstream_delay_ms: int | None  # None: test mode (no upstream)
    loads: list[Load]
    ttft: dict[str, float] | None = None


@dataclass
class Result:
    scenario: str
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    runs: list[float]
    ideal_rps: float | None


SETUPS = [
    Setup(None, [Load("test mode (mock upstream)", UNIQUE_BODIES, 32, 3)]),
    Setup(
        0,
        [
            Load("cache miss: Gradio queue API, instant fake Space", UNIQUE_BODIES, 32, 3),
            Load("cache hit, same gateway", SAME_BODY, 32, 3),
            Load("cache miss, 1 connection", UNIQUE_BODIES, 1, 1),
            Load("cache hit, 1 connection", SAME_BODY, 1, 1),
        ],
    ),
    Setup(
        200,
        [Load("cache miss, 200 ms fake Space", UNIQUE_BODIES, 256, 5, ideal_rps=256 / 0.2)],
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up within {timeout} s")


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout} s")


def start(
    command: list[str], core: int, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["taskset", "-c", str(core), *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def wrk(url: str, connections: int, seconds: int, script: Path) -> tuple[float, float, float, int]:
    """requests/s, p50 ms, p99 ms and error count of one wrk run on core 1."""
    out = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
            "--",
            uuid.uuid4().hex[:12],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = p50 = p99 = 0.0
    errors = 0
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(parts[1])
        elif parts[:1] == ["50%"]:
            p50 = _ms(parts[1])
        elif parts[:1] == ["99%"]:
            p99 = _ms(parts[1])
        elif line.strip().startswith("Non-2xx"):
            errors += int(parts[-1])
        elif line.strip().startswith("Socket errors"):
            errors += sum(int(p.strip(",")) for p in parts if p.strip(",").isdigit())
    return rps, p50, p99, errors


def run_setup(setup: Setup, *, seconds: int, scripts: dict[str, Path]) -> list[Result]:
    space = None
    env = {k: v for k, v in os.environ.items() if k not in ("UPSTREAM_URL", "TEST_MODE")}
    if setup.upstream_delay_ms is not None:
        space_port = free_port()
        space = start(
            [
                sys.executable,
                "-m",
                "bench.fake_space",
                str(space_port),
                str(setup.upstream_delay_ms),
            ],
            core=1,
        )
        wait_port(space_port)
        env["UPSTREAM_URL"] = f"http://127.0.0.1:{space_port}"
    port = free_port()
    env["PORT"] = str(port)
    gateway = start(
        [sys.executable, "-m", "proxy", "--host", "127.0.0.1", "--port", str(port)],
        core=0,
        env=env,
    )
    results = []
    try:
        url = f"http://127.0.0.1:{port}/api/chat"
        wait_http(f"http://127.0.0.1:{port}/readyz")
        if setup.upstream_delay_ms == 0 and "UPSTREAM_URL" in env:
            print("running: time to first token, direct vs through the gateway...", flush=True)
            setup.ttft = ttft.run(env["UPSTREAM_URL"], f"http://127.0.0.1:{port}")
        for load in setup.loads:
            print(f"running: {load.name} ({load.connections} connections)...", flush=True)
            script = scripts[load.script]
            # Warm-up: the upstream pool and the allocator grow during the first seconds.
            wrk(url, load.connections, 6, script)
            samples = [wrk(url, load.connections, seconds, script) for _ in range(load.runs)]
            median = sorted(samples)[len(samples) // 2]
            results.append(
                Result(
                    scenario=load.name,
                    connections=load.connections,
                    requests_per_s=median[0],
                    p50_ms=median[1],
                    p99_ms=median[2],
                    errors=sum(s[3] for s in samples),
                    runs=[s[0] for s in samples],
                    ideal_rps=load.ideal_rps,
                )
            )
    finally:
        stop(gateway)
        if space is not None:
            stop(space)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=8, help="seconds per run")
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(
                f"bench: {tool} is missing; install it with: apt-get install -y wrk util-linux"
            )
    if (os.cpu_count() or 1) < 2:
        sys.exit("bench: needs two cores (gateway on one, load and fake Space on the other)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    scripts = {}
    for name, lua in (("unique", UNIQUE_BODIES), ("same", SAME_BODY)):
        scripts[lua] = RESULTS / f"{name}.lua"
        scripts[lua].write_text(lua)

    results = []
    for setup in SETUPS:
        results.extend(run_setup(setup, seconds=args.seconds, scripts=scripts))

    print()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print("| scenario | conns | req/s (median) | p50 ms | p99 ms | errors | vs ideal |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        vs_ideal = f"{100 * r.requests_per_s / r.ideal_rps:.0f} %" if r.ideal_rps else ""
        print(
            f"| {r.scenario} | {r.connections} | {r.requests_per_s:,.0f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.errors} | {vs_ideal} |"
        )
    for setup in SETUPS:
        if setup.ttft:
            t = setup.ttft
            print(
                f"time to first token (1 connection, streamed): direct p50 "
                f"{t['direct_p50_ms']:.2f} ms, through the gateway p50 {t['gateway_p50_ms']:.2f}"
                f" ms, added p50 {t['added_p50_ms']:.2f} ms (p99 {t['direct_p99_ms']:.2f} vs "
                f"{t['gateway_p99_ms']:.2f} ms)"
            )
    spread = {r.scenario: [round(x) for x in r.runs] for r in results}
    print(f"all runs (req/s): {json.dumps(spread)}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"bench-{stamp}.json"
    ttfts = [s.ttft for s in SETUPS if s.ttft]
    path.write_text(json.dumps({"results": [asdict(r) for r in results], "ttft": ttfts}, indent=2))
    print(f"saved {path.relative_to(ROOT)}")
    if any(r.errors for r in results):
        sys.exit("bench: some requests failed")


if __name__ == "__main__":
    main()
