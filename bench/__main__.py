"""``python -m bench``: what the gateway costs, measured in one run on this machine.

The gateway runs as deployed (the Procfile's ``python -m proxy``, default settings: access
log and metrics on, and a rate limit that is on but high enough never to refuse the one load
generator) pinned to core 0 with ``taskset``; the fake Space (``bench/fake_space.py``) and the
load generator (``wrk``) share core 1. Each load is warmed up until the gateway's memory
settles, then run one to five times; the median run is reported, against two anchors measured
in the same run: a bare Starlette app (``bench/bare_app.py``) in the gateway's place, and the
fake Space called directly. Cache hits and misses are measured
through the same gateway process; a soak run in test mode watches the gateway's memory.
Results are printed as a table and saved as JSON and a PNG chart under ``bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import httpx

from bench import coldstart, herd, ratios, ttft
from bench.ab import _cpu_seconds as cpu_seconds

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


# The fake Space's two-step queue API straight from wrk: a POST for the event id, then the
# GET for its result, alternating. The fake Space answers any id, so the order across
# connections does not matter; a generation is two requests.
DIRECT_TWO_STEP = """
counter = 0
post = wrk.format("POST", "/gradio_api/call/predict", {["Content-Type"] = "application/json"},
  '{"data": ["How can I sleep better?", 64]}')
get = wrk.format("GET", "/gradio_api/call/predict/1")
request = function()
  counter = counter + 1
  if counter % 2 == 1 then return post end
  return get
end
"""


@dataclass
class Load:
    name: str
    script: str  # UNIQUE_BODIES (every request a cache miss), SAME_BODY (hits), DIRECT_TWO_STEP
    connections: int
    runs: int
    ideal_rps: float | None = None
    seconds: int | None = None  # None: the run length given on the command line

    @property
    def direct(self) -> bool:
        return self.script == DIRECT_TWO_STEP


@dataclass
class Setup:
    """One gateway process (and fake Space) serving several loads in turn."""

    upstream_delay_ms: int | None  # None: test mode (no upstream)
    loads: list[Load]
    # With several upstreams (UPSTREAMS_FILE): (name, "space" or "refused", priority) each;
    # "refused" is a port nothing listens on.
    upstreams: list[tuple[str, str, int]] | None = None
    # Another server in the gateway's place (python -m MODULE PORT): the bare-app anchor.
    module: str | None = None
    ttft: dict[str, float] | None = None
    generation: dict[str, float] | None = None
    rss_mb: list[float] = field(default_factory=list)  # after warm-up, ..., at the end


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
    seconds: int = 0
    direct: bool = False
    rss_mb: list[float] = field(default_factory=list)  # every 5 s, for the soak
    cpu_us: float = 0.0  # the server's CPU time per request (per generation when direct)


SOAK = "soak: test mode, unique bodies"
RATE_LIMIT = "100000/second"
BARE = "bare Starlette app (anchor: uvicorn, one orjson route)"
BARE_1 = "bare Starlette app, 1 connection"
# Each gateway row's target, as a share of the bare app's req/s at its connection count.
BARE_TARGETS = {"test mode": 0.75, "cache hit": 0.75, "cache miss": 0.40}
SINGLE_MISS = "cache miss: Gradio queue API, instant fake Space"
ROUTED = "cache miss, routed over two upstreams (same fake Space)"
FAILOVER = "cache miss, first upstream refusing, second serving"
SETUPS = [
    Setup(
        None,
        [Load(BARE, SAME_BODY, 32, 3), Load(BARE_1, SAME_BODY, 1, 1)],
        module="bench.bare_app",
    ),
    Setup(
        None,
        [
            Load("test mode (mock upstream)", UNIQUE_BODIES, 32, 3),
            Load("test mode, 1 connection", UNIQUE_BODIES, 1, 1),
            Load(SOAK, UNIQUE_BODIES, 32, 1, seconds=60),
        ],
    ),
    Setup(
        0,
        [
            Load("direct upstream (fake Space, no gateway)", DIRECT_TWO_STEP, 32, 3),
            Load("direct upstream, 1 connection", DIRECT_TWO_STEP, 1, 1),
            Load(SINGLE_MISS, UNIQUE_BODIES, 32, 3),
            Load("cache hit, same gateway", SAME_BODY, 32, 3),
            Load("cache miss, 1 connection", UNIQUE_BODIES, 1, 1),
            Load("cache hit, 1 connection", SAME_BODY, 1, 1),
        ],
    ),
    Setup(
        200,
        [Load("cache miss, 200 ms fake Space", UNIQUE_BODIES, 256, 5, ideal_rps=256 / 0.2)],
    ),
    Setup(
        0,
        [
            Load(ROUTED, UNIQUE_BODIES, 32, 3),
            Load("routed miss, 1 connection", UNIQUE_BODIES, 1, 1),
        ],
        upstreams=[("space-a", "space", 0), ("space-b", "space", 0)],
    ),
    Setup(
        0,
        [
            Load(FAILOVER, UNIQUE_BODIES, 32, 3),
            Load("failover miss, 1 connection", UNIQUE_BODIES, 1, 1),
        ],
        upstreams=[("down", "refused", 0), ("up", "space", 1)],
    ),
]


WARMUP_STEP = 6  # seconds
WARMUP_MAX_STEPS = 10
WARMUP_SETTLED = 0.01  # RSS growth between two steps below which the gateway has settled


def warm_up(url: str, connections: int, script: Path, pid: int) -> None:
    """Load the gateway until its memory settles: the upstream pool, the cache (10,000
    entries where the load misses it) and the allocator grow during the first seconds, for
    longer the slower the load fills them."""
    before = rss_mb(pid)
    for _ in range(WARMUP_MAX_STEPS):
        wrk(url, connections, WARMUP_STEP, script)
        after = rss_mb(pid)
        if after - before < WARMUP_SETTLED * before:
            return
        before = after


def record_rss(samples: list[float], pid: int) -> None:
    samples.append(rss_mb(pid))


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


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


Sample = tuple[float, float, float, int]


def wrk(
    url: str,
    connections: int,
    seconds: int,
    script: Path,
    *,
    every: Callable[[], None] | None = None,
) -> Sample:
    """requests/s, p50 ms, p99 ms and error count of one wrk run on core 1; ``every`` is
    called every 5 s while it runs."""
    process = subprocess.Popen(
        [
            "taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
            "--latency", "--timeout", "10s", "-s", str(script), url, "--", uuid.uuid4().hex[:12],
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    while every is not None and process.poll() is None:
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            every()
    out, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"wrk failed ({process.returncode}): {out}")
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


def as_generations(sample: Sample) -> Sample:
    """A two-step direct run in generations: half the requests; each generation's latency is
    taken as the sum of its two requests' percentiles (an approximation)."""
    rps, p50, p99, errors = sample
    return rps / 2, p50 * 2, p99 * 2, errors


def run_setup(setup: Setup, *, seconds: int, scripts: dict[str, Path]) -> list[Result]:
    space = None
    env = {k: v for k, v in os.environ.items() if k not in ("UPSTREAM_URL", "TEST_MODE")}
    # As deployed: access log, metrics and a rate limit all on. One load generator is one
    # client, so the limit is one it never reaches; counting it costs what it costs.
    env["RATE_LIMIT"] = RATE_LIMIT
    space_url = ""
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
        space_url = f"http://127.0.0.1:{space_port}"
        if setup.upstreams is None:
            env["UPSTREAM_URL"] = space_url
        else:
            env["UPSTREAMS_FILE"] = str(upstreams_file(setup.upstreams, space_url))
    port = free_port()
    env["PORT"] = str(port)
    command = (
        [sys.executable, "-m", setup.module, str(port)]
        if setup.module
        else [sys.executable, "-m", "proxy", "--host", "127.0.0.1", "--port", str(port)]
    )
    gateway = start(command, core=0, env=env)
    results = []
    try:
        url = f"http://127.0.0.1:{port}/api/chat"
        if setup.module:
            wait_port(port)
        else:
            wait_http(f"http://127.0.0.1:{port}/readyz")
        if setup.upstream_delay_ms == 0 and setup.upstreams is None:
            print("running: time to first token and 1-connection latency, paired...", flush=True)
            setup.ttft = ttft.run(space_url, f"http://127.0.0.1:{port}")
            setup.generation = ttft.run(space_url, f"http://127.0.0.1:{port}", stream=False)
        for load in setup.loads:
            print(f"running: {load.name} ({load.connections} connections)...", flush=True)
            script = scripts[load.script]
            target = f"{space_url}/" if load.direct else url
            if load.direct:
                wrk(target, load.connections, WARMUP_STEP, script)
            else:
                warm_up(target, load.connections, script, gateway.pid)
            if not setup.rss_mb and not load.direct:
                setup.rss_mb.append(rss_mb(gateway.pid))
            samples: list[Sample] = []
            cpu: list[float] = []
            memory: list[float] = [rss_mb(gateway.pid)]
            # The server's CPU per request: the fake Space's for a direct row.
            server = space.pid if load.direct and space is not None else gateway.pid
            for _ in range(load.runs):
                before = cpu_seconds(server)
                sample = wrk(
                    target,
                    load.connections,
                    load.seconds or seconds,
                    script,
                    every=partial(record_rss, memory, gateway.pid),
                )
                samples.append(as_generations(sample) if load.direct else sample)
                served = samples[-1][0] * (load.seconds or seconds)
                cpu.append((cpu_seconds(server) - before) / max(served, 1) * 1e6)
            memory.append(rss_mb(gateway.pid))
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
                    seconds=load.seconds or seconds,
                    direct=load.direct,
                    rss_mb=memory if load.seconds else [],
                    cpu_us=statistics.median(cpu),
                )
            )
        setup.rss_mb.append(rss_mb(gateway.pid))
    finally:
        stop(gateway)
        if space is not None:
            stop(space)
    return results


def setup_name(setup: Setup) -> str:
    if setup.upstreams is not None:
        refusing = any(target == "refused" for _, target, _ in setup.upstreams)
        return "failover" if refusing else "routed"
    if setup.module is not None:
        return "bare app"
    if setup.upstream_delay_ms is None:
        return "test mode"
    return "instant fake Space" if setup.upstream_delay_ms == 0 else "200 ms fake Space"


def upstreams_file(upstreams: list[tuple[str, str, int]], space_url: str) -> Path:
    """The UPSTREAMS_FILE of a routed setup, written under bench/results/."""
    lines = []
    for name, target, priority in upstreams:
        url = space_url if target == "space" else f"http://127.0.0.1:{free_port()}"
        lines += ["[[upstreams]]", f'name = "{name}"', 'kind = "gradio"', f'url = "{url}"',
                  f"priority = {priority}", ""]  # fmt: skip
    path = RESULTS / "upstreams.toml"
    path.write_text("\n".join(lines))
    return path


def routing_cost(results: list[Result]) -> list[str]:
    """The routed rows against the single-upstream miss of the same run."""
    by_name = {r.scenario: r for r in results}
    single = by_name.get(SINGLE_MISS)
    lines = []
    for name in (ROUTED, FAILOVER):
        routed = by_name.get(name)
        if single is None or routed is None:
            continue
        ratio = routed.requests_per_s / single.requests_per_s
        lines.append(
            f"{name}: {ratio:.2f}x the single-upstream miss's req/s "
            f"({100 * (1 - ratio):+.1f} % cost), p50 {routed.p50_ms - single.p50_ms:+.2f} ms, "
            f"{routed.errors} errors"
        )
    return lines


def comparison(result: Result, direct: dict[int, Result]) -> str:
    """The row against the direct-upstream row at the same connection count."""
    if result.direct:
        return "(baseline)"
    if result.scenario.startswith("bare"):
        return ""
    base = direct.get(result.connections)
    if base is None:
        return ""
    return (
        f"{result.requests_per_s / base.requests_per_s:.2f}x req/s, "
        f"p50 {result.p50_ms - base.p50_ms:+.2f} ms"
    )


def against_bare(result: Result, bare: dict[int, Result]) -> str:
    """The row's req/s as a share of the bare app's at its connection count, with the
    target where it has one."""
    base = bare.get(result.connections)
    if result.direct or base is None or result.scenario.startswith("bare"):
        return "(anchor)" if result.scenario.startswith("bare") else ""
    share = result.requests_per_s / base.requests_per_s
    target = next((t for k, t in BARE_TARGETS.items() if result.scenario.startswith(k)), None)
    if target is None or result.connections != 32:
        return f"{100 * share:.0f} %"
    verdict = "met" if share >= target else "missed"
    return f"**{100 * share:.0f} %** (≥ {100 * target:.0f} %: {verdict})"


def report(results: list[Result], setups: list[Setup] = SETUPS) -> list[str]:
    direct = {r.connections: r for r in results if r.direct}
    bare = {r.connections: r for r in results if r.scenario.startswith("bare")}
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; gateway on core 0, wrk and fake Space on core 1",
        "",
        f"gateway as deployed: access log and metrics on, RATE_LIMIT={RATE_LIMIT} (counted, "
        "never refusing one load generator)",
        "",
        "| scenario | conns | vs bare app | req/s (median) | CPU µs/req | p50 ms | p99 ms "
        "| p99/p50 | errors | vs direct upstream | vs ideal |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        vs_ideal = f"{100 * r.requests_per_s / r.ideal_rps:.0f} %" if r.ideal_rps else ""
        tail = f"{r.p99_ms / r.p50_ms:.1f}" if r.p50_ms else ""
        lines.append(
            f"| {r.scenario} | {r.connections} | {against_bare(r, bare)} | "
            f"{r.requests_per_s:,.0f} | {r.cpu_us:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{tail} | {r.errors} | {comparison(r, direct)} | {vs_ideal} |"
        )
    lines.append("")
    for setup in setups:
        for label, paired in (
            ("whole generation", setup.generation),
            ("time to first token, streamed", setup.ttft),
        ):
            if paired:
                lines.append(
                    f"{label} (1 connection, paired): direct p50 {paired['direct_p50_ms']:.2f} "
                    f"ms, through the gateway p50 {paired['gateway_p50_ms']:.2f} ms, "
                    f"added p50 {paired['added_p50_ms']:.2f} ms (p99 "
                    f"{paired['direct_p99_ms']:.2f} vs {paired['gateway_p99_ms']:.2f} ms)"
                )
    for setup in setups:
        if not setup.rss_mb:
            continue
        name = setup_name(setup)
        first, last = setup.rss_mb[0], setup.rss_mb[-1]
        lines.append(
            f"gateway RSS ({name}): {first:.1f} MiB after warm-up, {last:.1f} MiB after the "
            f"run ({100 * (last - first) / first:+.1f} %)"
        )
    for r in results:
        if r.rss_mb:
            base = r.rss_mb[0]
            peak = max(r.rss_mb)
            lines.append(
                f"{r.scenario}: {r.runs[0] * r.seconds:,.0f} requests in "
                f"{r.seconds} s, {r.errors} errors; RSS every 5 s (MiB): "
                f"{', '.join(f'{m:.1f}' for m in r.rss_mb)} (peak {100 * (peak - base) / base:+.1f}"
                " % over the first sample)"
            )
    lines += routing_cost(results)
    spread = {r.scenario: [round(x) for x in r.runs] for r in results}
    lines.append(f"all runs (req/s): {json.dumps(spread)}")
    return lines


def chart(results: list[Result], path: Path) -> None:
    """Requests/s per scenario as horizontal bars, the direct upstream's in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(reversed(results))
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.2))
    colors = ["#9e9e9e" if r.direct else "#1f77b4" for r in rows]
    labels = [f"{r.scenario} ({r.connections})" for r in rows]
    bars = ax.barh(labels, [r.requests_per_s for r in rows], color=colors)
    for bar, r in zip(bars, rows, strict=True):
        label = f" {r.requests_per_s:,.0f}  p50 {r.p50_ms:.2f} ms"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center")
    ax.set_xlabel("requests/s (median run); direct upstream in grey, in generations/s")
    ax.set_xlim(0, max(r.requests_per_s for r in rows) * 1.5)
    ax.set_title("proxy gateway on one core (connections in brackets)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--seconds", type=int, default=6, help="seconds per run")
    parser.add_argument("--soak", type=int, default=60, help="seconds of the soak run")
    parser.add_argument(
        "--only",
        choices=["routing", "anchors"],
        help="routing: only the single-upstream miss and the routed setups; anchors: the bare "
        "app, test mode and the instant fake Space",
    )
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(
                f"bench: {tool} is missing; install it with: apt-get install -y wrk util-linux"
            )
    if (os.cpu_count() or 1) < 2:
        sys.exit("bench: needs two cores (gateway on one, load and fake Space on the other)")
    for setup in SETUPS:
        for load in setup.loads:
            if load.name == SOAK:
                load.seconds = args.soak
    RESULTS.mkdir(parents=True, exist_ok=True)
    scripts = {}
    for name, lua in (("unique", UNIQUE_BODIES), ("same", SAME_BODY), ("direct", DIRECT_TWO_STEP)):
        scripts[lua] = RESULTS / f"{name}.lua"
        scripts[lua].write_text(lua)

    results = []
    setups = SETUPS
    if args.only == "routing":
        single = Setup(0, [load for load in SETUPS[2].loads if load.name == SINGLE_MISS])
        setups = [single, *(s for s in SETUPS if s.upstreams)]
    elif args.only == "anchors":
        setups = SETUPS[:3]
    for setup in setups:
        results.extend(run_setup(setup, seconds=args.seconds, scripts=scripts))
    if args.only:
        print("\n".join(report(results, setups)))
        return

    print("cold start ...", flush=True)
    cold = coldstart.measure()
    print("identical concurrent streams ...", flush=True)
    herds = herd.measure()
    print("CPU per request against the anchors ...", flush=True)
    against = ratios.run(rounds=3, seconds=4)
    lines = report(results) + [
        "",
        *ratios.report(against),
        "",
        *coldstart.report(cold),
        "",
        *herd.report(herds),
    ]
    print()
    print("\n".join(lines))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = RESULTS / f"bench-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "results": [asdict(r) for r in results],
                "paired": [{"generation": s.generation, "ttft": s.ttft} for s in SETUPS if s.ttft],
                "rss_mb": [s.rss_mb for s in SETUPS],
                "cold_start": [asdict(c) for c in cold],
                "identical_streams": [asdict(h) for h in herds],
                "cpu_per_request": against,
                "report": lines,
            },
            indent=2,
        )
    )
    png = path.with_suffix(".png")
    chart(results, png)
    print(f"saved {path.relative_to(ROOT)} and {png.relative_to(ROOT)}")
    if any(r.errors for r in results):
        sys.exit("bench: some requests failed")


if __name__ == "__main__":
    main()
