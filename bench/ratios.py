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
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
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
ROWS = [
    Row(BARE, "cache hit", module="bench.bare_app"),
    Row(NAIVE, "openai miss", module="bench.naive_forwarder"),
    Row("gateway: test mode", "test mode", anchor=BARE, target=1.6),
    Row("gateway: cache hit", "cache hit", anchor=BARE, target=1.33),
    Row("gateway: miss, JSON, OpenAI upstream", "openai miss", anchor=NAIVE, target=1.3),
    Row(GRADIO_MISS, "cache miss", anchor=NAIVE, target=1.6),
    Row(
        "gateway: miss, streamed (10 chunks), Gradio",
        "streamed miss",
        anchor=GRADIO_MISS,
        target=2.0,
    ),  # fmt: skip
]


def measure(row: Row, script: Path, space: str, seconds: int) -> tuple[float, float]:
    """CPU µs per request and req/s of one row, after a warm-up run."""
    with serving(ROOT, row.scenario, script, space, module=row.module) as (pid, wrk):
        wrk(seconds)
        before = _cpu_seconds(pid)
        served = wrk(seconds)
        return (_cpu_seconds(pid) - before) / served * 1e6, served / seconds


def run(rounds: int, seconds: int) -> dict[str, tuple[float, float]]:
    """Each row's median CPU µs per request and median req/s."""
    samples: dict[str, list[tuple[float, float]]] = {row.name: [] for row in ROWS}
    with tempfile.TemporaryDirectory(prefix="bench-ratios-") as tmp:
        scripts = write_scripts(Path(tmp))
        port = _free_port()
        space = _fake_space(port)
        try:
            for index in range(rounds):
                shift = index % len(ROWS)
                for row in ROWS[shift:] + ROWS[:shift]:
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
    for row in ROWS:
        cpu, rps = results[row.name]
        if row.anchor is None:
            lines.append(f"| {row.name} | {cpu:.0f} | {rps:,.0f} | 1.00 | | |")
            continue
        ratio = cpu / results[row.anchor][0]
        verdict = "met" if row.target is not None and ratio <= row.target else "missed"
        lines.append(
            f"| {row.name} | {cpu:.0f} | {rps:,.0f} | {ratio:.2f} × {row.anchor.split(' (')[0]}"
            f" | ≤ {row.target} | {verdict} |"
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
