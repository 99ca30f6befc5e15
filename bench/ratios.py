"""``python -m bench.ratios``: the gateway's CPU per request against its anchors, one run.

Each row is served as in ``bench.ab`` (pinned to core 0; wrk and the fake Space on core 1;
the gateway as deployed, access log, metrics and a never-refusing rate limit on) and measured
as the server process's CPU time per request served over a wrk run after a warm-up run, with
req/s beside it. Rows are interleaved over rounds (the order rotates), and each row's median
is compared with its anchor from the same run:

- the bare Starlette app (``bench/bare_app.py``) for test mode and the cache hit;
- the naive Starlette + aiohttp forwarder (``bench/naive_forwarder.py``: one upstream request
  per call, no cache, guard, validation, log or metrics) for the misses;
- the gateway's own JSON miss through the Gradio queue API for the streamed miss (10 chunks).

A reference row has an anchor and no target: ``bench/inline_hit.py``, a hit's work written as
one function on the gateway's server, against the bare app (what the gateway's layers cost).

Where nginx is installed, an nginx reverse proxy (one hop to the same OpenAI upstream, one
worker, keep-alive both ways, no access log) is measured too: the floor of any proxy.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.ab import ROOT, SCENARIOS, _cpu_seconds, _fake_space, serving, write_scripts
from bench.coldstart import _free_port


@dataclass(frozen=True)
class Row:
    name: str
    scenario: str  # a bench.ab scenario: its connections, body script and upstream
    module: str = "proxy"
    anchor: str | None = None
    target: float | None = None


BARE = "bare Starlette app (anchor)"
NAIVE = "naive Starlette + aiohttp forwarder, OpenAI upstream (anchor)"
GRADIO_MISS = "gateway: miss, JSON, Gradio queue API"
INLINE = "reference: a hit's work in one function (bench/inline_hit.py)"
ROWS = [
    Row(BARE, "cache hit", module="bench.bare_app"),
    Row(NAIVE, "openai miss", module="bench.naive_forwarder"),
    Row("gateway: test mode", "test mode", anchor=BARE, target=1.6),
    Row("gateway: cache hit", "cache hit", anchor=BARE, target=1.33),
    Row(INLINE, "cache hit", module="bench.inline_hit", anchor=BARE),
    Row("gateway: miss, JSON, OpenAI upstream", "openai miss", anchor=NAIVE, target=1.3),
    Row(GRADIO_MISS, "cache miss", anchor=NAIVE, target=1.6),
    Row(
        "gateway: miss, streamed (10 chunks), Gradio",
        "streamed miss",
        anchor=GRADIO_MISS,
        target=2.0,
    ),  # fmt: skip
]


NGINX = "nginx reverse proxy, one hop, OpenAI upstream (anchor)"
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log stderr crit;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  upstream space {{ server 127.0.0.1:{space}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location /api/chat {{
      proxy_pass http://space/v1/chat/completions;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


@contextmanager
def nginx(space: str, tmp: Path) -> Iterator[tuple[list[int], int]]:
    """nginx on core 0 in front of ``space``: its pids (master, worker) and port."""
    port = _free_port()
    conf = tmp / "nginx.conf"
    space_port = space.rsplit(":", 1)[1]
    conf.write_text(NGINX_CONF.format(tmp=tmp, space=space_port, port=port))
    process = subprocess.Popen(
        ["taskset", "-c", "0", "nginx", "-p", str(tmp), "-c", str(conf)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        children: list[int] = []
        while not children and time.monotonic() < deadline:
            time.sleep(0.05)
            listed = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
            children = [int(pid) for pid in listed.split()]
        yield [process.pid, *children], port
    finally:
        process.terminate()
        process.wait(10)


def _nginx_wrk(port: int, script: Path, seconds: int) -> int:
    command = ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds}s", "-s", str(script),
               f"http://127.0.0.1:{port}/api/chat", "--", f"r{time.time_ns()}"]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    found = re.search(r"(\d+) requests in", output)
    assert found, output
    return int(found.group(1))


def measure(row: Row, script: Path, space: str, seconds: int) -> tuple[float, float]:
    """CPU µs per request and req/s of one row, after a warm-up run."""
    if row.module == "nginx":
        with (
            tempfile.TemporaryDirectory(prefix="bench-nginx-") as tmp,
            nginx(space, Path(tmp)) as (pids, port),
        ):
            _nginx_wrk(port, script, seconds)
            before = sum(map(_cpu_seconds, pids))
            served = _nginx_wrk(port, script, seconds)
            return (sum(map(_cpu_seconds, pids)) - before) / served * 1e6, served / seconds
    with serving(ROOT, row.scenario, script, space, module=row.module) as (pid, wrk):
        wrk(seconds)
        before = _cpu_seconds(pid)
        served = wrk(seconds)
        return (_cpu_seconds(pid) - before) / served * 1e6, served / seconds


def rows() -> list[Row]:
    """The rows this machine can measure: nginx's only where it is installed."""
    if shutil.which("nginx") is None:
        return ROWS
    return [ROWS[0], ROWS[1], Row(NGINX, "openai miss", module="nginx"), *ROWS[2:]]


def run(rounds: int, seconds: int) -> dict[str, tuple[float, float]]:
    """Each row's median CPU µs per request and median req/s."""
    measured = rows()
    samples: dict[str, list[tuple[float, float]]] = {row.name: [] for row in measured}
    with tempfile.TemporaryDirectory(prefix="bench-ratios-") as tmp:
        scripts = write_scripts(Path(tmp))
        port = _free_port()
        space = _fake_space(port)
        try:
            for index in range(rounds):
                shift = index % len(measured)
                for row in measured[shift:] + measured[:shift]:
                    script = scripts[SCENARIOS[row.scenario][1]]
                    samples[row.name].append(
                        measure(row, script, f"http://127.0.0.1:{port}", seconds)
                    )
                    print(f"  round {index + 1}: {row.name}", flush=True)
        finally:
            space.terminate()
            space.wait(10)
    return {
        name: (statistics.median(c for c, _ in got), statistics.median(r for _, r in got))
        for name, got in samples.items()
    }


def report(results: dict[str, tuple[float, float]]) -> list[str]:
    lines = [
        "| row | CPU µs per request | req/s (1 core) | × its anchor | target | verdict |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in rows():
        if row.name not in results:
            continue
        cpu, rps = results[row.name]
        if row.anchor is None:
            lines.append(f"| {row.name} | {cpu:.0f} | {rps:,.0f} | 1.00 | | |")
            continue
        ratio = cpu / results[row.anchor][0]
        if row.target is None:
            target, verdict = "", "reference"
        else:
            target, verdict = f"≤ {row.target}", "met" if ratio <= row.target else "missed"
        lines.append(
            f"| {row.name} | {cpu:.0f} | {rps:,.0f} | {ratio:.2f} × {row.anchor.split(' (')[0]}"
            f" | {target} | {verdict} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ratios", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    args = parser.parse_args()
    print("\n".join(report(run(args.rounds, args.seconds))))


if __name__ == "__main__":
    main()
