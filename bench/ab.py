"""``python -m bench.ab BASE [HEAD]``: what a change costs per request, two revisions
measured in one run, interleaved.

Throughput on a shared VM moves by 10 to 20 % from run to run, too much to see a 3 % change.
The gateway's CPU time per request (utime + stime of its process over a wrk run, divided by
the requests served) moves far less, so that is what this compares. Each revision is checked
out in a temporary git worktree and served as deployed (``python -m proxy``, pinned to core 0,
a rate limit on but never refusing, as in ``make bench``); wrk and the fake Space share core
1. Rounds alternate which revision goes first, so drift on the host hits both alike. HEAD
defaults to the working tree as it is.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench.coldstart import _free_port, _post

ROOT = Path(__file__).resolve().parents[1]
UNIQUE = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
run = ""
init = function(args) run = args[1] end
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"inputs": "How can I sleep better? ' .. run .. '-' ..
    counter .. '", "parameters": {"max_new_tokens": 64}}')
end
"""
SAME = UNIQUE.replace("' .. run .. '-' ..\n    counter .. '", "")
STREAMED = UNIQUE.replace('"parameters"', '"stream": true, "parameters"')
# name -> (connections, body script, needs the fake Space)
SCENARIOS = {
    "test mode": (32, UNIQUE, False),
    "cache hit": (32, SAME, True),
    "cache miss": (32, UNIQUE, True),
    "cache miss, 1 connection": (1, UNIQUE, True),
    "streamed miss": (32, STREAMED, True),
    "openai miss": (32, UNIQUE, True),
}
# What a scenario sets beyond UPSTREAM_URL: the fake Space answers as an OpenAI server too.
SCENARIO_ENV = {"openai miss": {"UPSTREAM_KIND": "openai"}}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while _post(port) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answers on port {port}")
        time.sleep(0.02)


@contextmanager
def serving(
    tree: Path,
    scenario: str,
    script: Path,
    space: str,
    routed: Path | None = None,
    module: str = "proxy",
) -> Iterator[tuple[int, Callable[[int], int]]]:
    """The gateway of ``tree`` served as deployed on core 0 for ``scenario``: yields its pid
    and a function that runs wrk (core 1) for some seconds and returns the requests served.
    With ``routed``, the upstream is that UPSTREAMS_FILE instead of UPSTREAM_URL; with
    ``module="bench.bare_app"``, the bare Starlette app serves instead."""
    connections, _, upstream = SCENARIOS[scenario]
    port = _free_port()
    # As deployed (make bench does the same): a rate limit that is on, counted, never refusing.
    env = {**os.environ, "RATE_LIMIT": "100000/second", "MOCK_TOKEN_DELAY_MS": "0"}
    env.pop("UPSTREAM_URL", None)
    env.update(SCENARIO_ENV.get(scenario, {}))
    if routed is not None:
        env["UPSTREAMS_FILE"] = str(routed)
    elif upstream:
        env["UPSTREAM_URL"] = space
    # Another module (an anchor) takes the port and the upstream's URL.
    arguments = ["--port", str(port)] if module == "proxy" else [str(port), space]
    gateway = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", module, *arguments],
        cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def wrk(seconds: int) -> int:
        command = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
                   "-s", str(script), f"http://127.0.0.1:{port}/api/chat", "--",
                   f"r{time.time_ns()}"]  # fmt: skip
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        found = re.search(r"(\d+) requests in", output)
        assert found, output
        return int(found.group(1))

    try:
        _wait_listening(port)
        yield gateway.pid, wrk
    finally:
        gateway.terminate()
        gateway.wait(10)


def measured_cpu(pid: int, wrk: Callable[[int], int], seconds: int) -> float:
    """Microseconds of ``pid``'s CPU per request served over a wrk run, after a warm-up run."""
    wrk(seconds)
    before = _cpu_seconds(pid)
    served = wrk(seconds)
    return (_cpu_seconds(pid) - before) / served * 1e6


def cpu_per_request(
    tree: Path, scenario: str, script: Path, space: str, seconds: int, routed: Path | None = None
) -> float:
    """Microseconds of the gateway's CPU per request served, after a warm-up run."""
    with serving(tree, scenario, script, space, routed) as (pid, wrk):
        return measured_cpu(pid, wrk, seconds)


@contextmanager
def checkout(revision: str | None, where: Path) -> Iterator[Path]:
    """``revision`` checked out in a git worktree at ``where``, removed afterwards; None is
    the working tree as it is."""
    if revision is None:
        yield ROOT
        return
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(where), revision],
                   cwd=ROOT, check=True)  # fmt: skip
    try:
        yield where
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT,
                       check=False)  # fmt: skip


def write_scripts(directory: Path) -> dict[str, Path]:
    """The wrk scripts, written into ``directory``, by their text."""
    scripts = {
        UNIQUE: directory / "unique.lua",
        SAME: directory / "same.lua",
        STREAMED: directory / "streamed.lua",
    }
    for lua, path in scripts.items():
        path.write_text(lua)
    return scripts


def _fake_space(port: int) -> subprocess.Popen[bytes]:
    """The instant fake Space on ``port``, on core 1, listening when this returns."""
    space = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, "-m", "bench.fake_space", str(port), "0"],
        cwd=ROOT, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_listening(port)
    except BaseException:
        space.terminate()
        raise
    return space


def routing(rounds: int, seconds: int) -> None:
    """The router's cost: a cache miss routed over two upstreams (the same fake Space twice)
    against the same miss through UPSTREAM_URL, in the working tree, interleaved."""
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        script = Path(tmp) / "unique.lua"
        script.write_text(UNIQUE)
        space_port = _free_port()
        space_url = f"http://127.0.0.1:{space_port}"
        routed = Path(tmp) / "upstreams.toml"
        routed.write_text("".join(
            f'[[upstreams]]\nname = "{name}"\nkind = "gradio"\nurl = "{space_url}"\n\n'
            for name in ("space-a", "space-b")))  # fmt: skip
        space = _fake_space(space_port)
        try:
            print(
                "| cache miss | one upstream | routed over two | routed / one |\n|---|---|---|---|"
            )
            for scenario in ("cache miss", "cache miss, 1 connection"):
                samples: dict[str, list[float]] = {"one": [], "routed": []}
                for index in range(rounds):
                    order = ["one", "routed"] if index % 2 == 0 else ["routed", "one"]
                    for name in order:
                        samples[name].append(cpu_per_request(
                            ROOT, scenario, script, space_url, seconds,
                            routed if name == "routed" else None))  # fmt: skip
                one, two = (statistics.median(samples[n]) for n in ("one", "routed"))
                print(f"| {scenario} | {one:.0f} µs | {two:.0f} µs | {two / one:.3f} |", flush=True)
        finally:
            space.terminate()
            space.wait(10)


def main() -> None:
    if "--routing" in sys.argv:
        rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 6
        routing(rounds, 5)
        return
    parser = argparse.ArgumentParser(
        prog="python -m bench.ab",
        description=__doc__,
        epilog="python -m bench.ab --routing [--rounds N]: the router's cost instead",
    )
    parser.add_argument("base", help="a git revision")
    parser.add_argument("head", nargs="?", help="a git revision (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--samples", action="store_true", help="print every round's figure")
    parser.add_argument(
        "--only", action="append", choices=list(SCENARIOS), help="these scenarios only"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp, ExitStack() as stack:
        trees = {
            name: stack.enter_context(checkout(revision, Path(tmp) / name))
            for name, revision in (("base", args.base), ("head", args.head))
        }
        scripts = write_scripts(Path(tmp))
        space_port = _free_port()
        space = _fake_space(space_port)
        try:
            print(f"base {args.base}, head {args.head or 'working tree'}; CPU µs per request "
                  "(median of rounds)\n")  # fmt: skip
            print("| scenario | base | head | head / base |\n|---|---|---|---|")
            for scenario, (_, lua, _) in SCENARIOS.items():
                if args.only and scenario not in args.only:
                    continue
                samples: dict[str, list[float]] = {"base": [], "head": []}
                for index in range(args.rounds):
                    order = ["base", "head"] if index % 2 == 0 else ["head", "base"]
                    for name in order:
                        samples[name].append(cpu_per_request(
                            trees[name], scenario, scripts[lua],
                            f"http://127.0.0.1:{space_port}", args.seconds))  # fmt: skip
                base, head = (statistics.median(samples[n]) for n in ("base", "head"))
                print(f"| {scenario} | {base:.0f} | {head:.0f} | {head / base:.3f} |", flush=True)
                if args.samples:
                    for name in ("base", "head"):
                        print(f"  {name}: {', '.join(f'{x:.0f}' for x in samples[name])}")
        finally:
            space.terminate()
            space.wait(10)


if __name__ == "__main__":
    main()
