"""``python -m bench.layers [REVISION ...]``: where a request's time goes, layer by layer.

The gateway is served as deployed (``bench.ab``'s set-up: pinned to core 0, a rate limit on
but never refusing, wrk and the fake Space on core 1). For each scenario, one wrk run
measures the gateway's CPU per request; a second one runs while py-spy samples the process.
Each sample is charged to one layer: the innermost frame of its stack that a rule below
recognises decides (so the access log's ``logging`` calls count as the access log, not as
the middleware that makes them). A layer's cost per request is its share of the samples
times the CPU per request. Each revision (default: the working tree) is checked out in a
temporary git worktree, so a "before" and an "after" come from one run on one host.

Needs py-spy (``pip install py-spy``; it reads the process with ptrace, so run as root or
with ``kernel.yama.ptrace_scope=0``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from bench.ab import (
    ROOT,
    SAME,
    SCENARIOS,
    _fake_space,
    checkout,
    measured_cpu,
    serving,
    write_scripts,
)
from bench.coldstart import _free_port

# (layer, path fragment, function names or None for any): the innermost frame that one of
# these matches decides a sample's layer. Order matters only between rules for one file.
RULES: list[tuple[str, str, frozenset[str] | None]] = [
    ("access log", "/logging/", None),
    ("access log", "/proxy/observe/logs.py", None),
    ("access log", "/proxy/observe/access_log.py", None),
    ("metrics", "/prometheus_client/", None),
    ("metrics", "/proxy/observe/metrics.py", None),
    ("guard and rate limit", "/proxy/access/", None),
    ("guard and rate limit", "/limits/", None),
    (
        "body parsing and validation",
        "/proxy/routes/bodies.py",
        frozenset({"parse_chat_request"}),
    ),  # fmt: skip
    ("body parsing and validation", "/proxy/routes/body_errors.py", None),
    ("body parsing and validation", "/proxy/routes/common.py", frozenset({"read_json_body"})),
    ("body parsing and validation", "/proxy/routes/plans.py", None),
    ("body parsing and validation", "/msgspec", None),
    ("request and prompt building", "/proxy/routes/bodies.py", None),
    ("request and prompt building", "/proxy/core/prompts.py", None),
    ("request and prompt building", "/proxy/core/generation.py", None),
    ("request and prompt building", "/proxy/core/catalog.py", None),
    ("cache key", "/proxy/core/cache.py", frozenset({"cache_key"})),
    ("cache lookup and store", "/proxy/core/cache.py", None),
    ("cache lookup and store", "/proxy/core/flights.py", None),
    ("cache lookup and store", "/cachetools/", None),
    (
        "cache lookup and store",
        "/proxy/core/gateway.py",
        frozenset({"_lookup", "_consult", "_replay", "_count", "_memory_hit"}),
    ),  # fmt: skip
    ("upstream exchange", "/proxy/upstreams/", None),
    ("upstream exchange", "/proxy/routing/", None),
    ("upstream exchange", "/aiohttp/", None),
    ("upstream exchange", "/yarl/", None),
    ("upstream exchange", "/multidict/", None),
    ("upstream exchange", "/stamina/", None),
    ("JSON reply", "/proxy/web/responses.py", None),
    ("JSON reply", "/proxy/routes/replies.py", None),
    ("edge protocol (head and body limits, deadlines)", "/proxy/serving/edge.py", None),
    # The response writing that stands in for uvicorn's own send.
    ("server and event loop (the bare app's too)", "/proxy/serving/cycle.py", None),
    ("middleware, routing and handler", "/proxy/", None),
    ("middleware, routing and handler", "/starlette/", None),
    ("server and event loop (the bare app's too)", "/uvicorn/", None),
    ("server and event loop (the bare app's too)", "/asyncio/", None),
    ("server and event loop (the bare app's too)", "/uvloop/", None),
    ("server and event loop (the bare app's too)", "/httptools/", None),
]
LAYERS = list(dict.fromkeys(layer for layer, _, _ in RULES)) + ["other"]
SHOWN = ("cache hit", "cache miss")
# The anchor: the bare Starlette app answering the hit's requests, profiled alike.
BARE = "bare Starlette app"


def layer_of(frames: list[str]) -> str:
    """The layer of one stack (root first), by its innermost recognised frame."""
    for frame in reversed(frames):
        name, _, where = frame.partition(" (")
        path = where.rsplit(":", 1)[0]
        for layer, fragment, functions in RULES:
            if fragment in path and (functions is None or name in functions):
                return layer
    return "other"


def waiting(frames: list[str]) -> bool:
    """A thread pool's idle worker, blocked on its queue (py-spy may count it as active)."""
    return frames[-1].startswith("_worker (") and "concurrent/futures/thread.py" in frames[-1]


def shares(raw: str) -> dict[str, float]:
    """Each layer's share of the samples of py-spy's raw (collapsed) output."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit() and not waiting(frames := stack.split(";")):
            counts[layer_of(frames)] += int(count)
    total = sum(counts.values()) or 1
    return {layer: counts[layer] / total for layer in LAYERS}


def profile(tree: Path, scenario: str, script: Path, space: str, seconds: int, out: Path,
            module: str = "proxy") -> tuple[float, dict[str, float]]:  # fmt: skip
    """CPU µs per request, and each layer's share, for ``scenario`` served from ``tree`` (by
    ``module``: the gateway, or the bare app)."""
    with serving(tree, scenario, script, space, module=module) as (pid, wrk):
        cpu = measured_cpu(pid, wrk, seconds)
        spy = subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--rate", "500", "--duration",
             str(seconds), "--format", "raw", "--full-filenames", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        wrk(seconds)
        _, error = spy.communicate(timeout=seconds + 30)
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {error.decode(errors='replace').strip()}")
    return cpu, shares(out.read_text())


def report(results: dict[str, dict[str, tuple[float, dict[str, float]]]]) -> list[str]:
    """A table: per layer, µs per request for each scenario and revision (and the bare app)."""
    columns = [(scenario, revision) for scenario in SHOWN for revision in results
               if scenario in results[revision]]  # fmt: skip
    head = " | ".join(f"{scenario}, {revision}" for scenario, revision in columns)
    lines = [f"| layer | {head} |", "|---|" + "---|" * len(columns)]
    for layer in LAYERS:
        cells = []
        for scenario, revision in columns:
            cpu, share = results[revision][scenario]
            cells.append(f"{cpu * share[layer]:.0f} µs ({share[layer]:.0%})")
        lines.append(f"| {layer} | {' | '.join(cells)} |")
    totals = [f"**{results[revision][scenario][0]:.0f} µs**" for scenario, revision in columns]
    lines.append(f"| CPU per request | {' | '.join(totals)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.layers", description=__doc__)
    parser.add_argument(
        "revisions", nargs="*", help="git revisions, '.' for the working tree (the default)"
    )
    parser.add_argument("--seconds", type=int, default=6)
    args = parser.parse_args()
    if shutil.which("py-spy") is None:
        sys.exit("bench.layers needs py-spy: pip install py-spy")
    with tempfile.TemporaryDirectory(prefix="bench-layers-") as tmp, ExitStack() as stack:
        trees = {
            revision if revision != "." else "working tree": stack.enter_context(
                checkout(None if revision == "." else revision, Path(tmp) / f"tree{index}")
            )
            for index, revision in enumerate(args.revisions or ["."])
        }
        scripts = write_scripts(Path(tmp))
        space_port = _free_port()
        space = _fake_space(space_port)
        results: dict[str, dict[str, tuple[float, dict[str, float]]]] = {}
        try:
            results[BARE] = {
                "cache hit": profile(ROOT, "cache hit", scripts[SAME], "", args.seconds,
                                     Path(tmp) / "bare.txt", module="bench.bare_app")
            }  # fmt: skip
            for revision, tree in trees.items():
                results[revision] = {
                    scenario: profile(tree, scenario, scripts[SCENARIOS[scenario][1]],
                                      f"http://127.0.0.1:{space_port}", args.seconds,
                                      Path(tmp) / f"{len(results)}-{scenario}.txt")
                    for scenario in SHOWN
                }  # fmt: skip
        finally:
            space.terminate()
            space.wait(10)
    print("\n".join(report(results)))


if __name__ == "__main__":
    main()
