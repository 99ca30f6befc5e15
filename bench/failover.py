"""``python -m bench.failover``: the README's fault scorecard.

A gateway with two upstreams (UPSTREAMS_FILE): first the scripted fault Space of the tests
(a Gradio app on raw sockets, told which fault to show), then an in-test TGI server that
answers and continues answers deterministically. For each fault of the first upstream: what
the client got, the latency the fault added to the first request that met it (against the
same request served by the second upstream alone), and to the requests right after it
(the failed upstream skipped). The timeouts are short here (first token 1 s, silence 1 s);
in production they are UPSTREAM_FIRST_TOKEN_TIMEOUT and UPSTREAM_READ_TIMEOUT.

Run on this machine; medians of ``--rounds`` fresh gateways per fault.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from asgi_lifespan import LifespanManager

from proxy import Settings, create_app
from tests.support.fake_llm_servers import ANSWER, FakeOpenAI, FakeTGI
from tests.support.fault_space import FaultSpace
from tests.support.servers import TcpRelay, ThreadServer, free_port

BODY = {"inputs": "How do I get over a cold?", "parameters": {"max_new_tokens": 64}}


@dataclass(frozen=True)
class Fault:
    name: str  # as the README's scorecard names it
    scenario: str  # the fault Space's scenario (see tests/support/fault_space.py)
    stream: bool = False
    continuer: str = "tgi"  # the second upstream: tgi (continues) or openai (cannot)


FAULTS = [
    Fault("429 once, Retry-After: 2, then serving", "brief429"),
    Fault("HTTP 500 once, then serving", "once500"),
    Fault("connection refused", "refused"),
    Fault("connection reset", "reset"),
    Fault("HTTP 500", "error500"),
    Fault("503 sleeping page (Space asleep)", "asleep"),
    Fault("503 queue full, Retry-After: 2", "busy2"),
    Fault("429, Retry-After: 2", "ratelimit2"),
    Fault("GPU quota error event", "quota"),
    Fault("silence before any output", "stall"),
    Fault("silence before the first token", "stall", stream=True),
    Fault("stream cut after 3 tokens", "cutmid", stream=True),
    Fault("stream silent after 3 tokens", "stallmid", stream=True),
    Fault("stream cut, a fallback that cannot continue", "cutmid", stream=True, continuer="openai"),
]


def upstreams(first_url: str, second: str, second_url: str) -> str:
    second_table = (
        f'name = "tgi"\nkind = "tgi"\nurl = "{second_url}"'
        if second == "tgi"
        else f'name = "api"\nkind = "openai"\nurl = "{second_url}"'
    )
    return (
        f'[[upstreams]]\nname = "space"\nkind = "gradio"\nurl = "{first_url}"\n'
        "upstream_read_timeout = 1\n\n"
        f"[[upstreams]]\n{second_table}\npriority = 1\n"
    )


@asynccontextmanager
async def gateway(file_text: str) -> AsyncIterator[httpx.AsyncClient]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upstreams.toml"
        path.write_text(file_text)
        settings = Settings(
            upstreams_file=str(path),
            cache_enabled=False,
            rate_limit="off",
            access_log=False,
            upstream_retries=0,
            # A stream's first token, while the second upstream is ready (the default is 10 s).
            failover_first_token_timeout=1,
            log_level="error",
        )
        async with LifespanManager(create_app(settings)) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                yield client


async def timed(client: httpx.AsyncClient, stream: bool) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = await client.post("/api/chat", json={**BODY, "stream": stream})
    return time.perf_counter() - started, response


def saw(response: httpx.Response, stream: bool) -> str:
    upstream = response.headers.get("x-upstream", "-")
    if not stream:
        if response.status_code == 200:
            return f"200 from {upstream}"
        body = response.json()
        return f"{response.status_code} {body['code']}"
    events = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], orjson.loads(lines["data"])))
    name, last = events[-1]
    if name == "done":
        whole = "the whole answer" if last["generated_text"] == ANSWER else "a wrong text"
        return f"200 stream, {whole} from {last['upstream']}, one done"
    text = "".join(e[1]["text"] for e in events if e[0] == "token")
    return f"200 stream, {text!r} then an error event ({last['code']}), no done"


async def measure(fault: Fault, space: FaultSpace, second_url: str, rounds: int) -> dict[str, Any]:
    firsts: list[float] = []
    nexts: list[float] = []
    seen = ""
    for _ in range(rounds):
        port = free_port()
        relay = TcpRelay(port, space.port).__enter__()
        listening = True
        try:
            space.switch = "ok"  # discovered healthy at start-up, then the fault appears
            async with gateway(upstreams(f"http://127.0.0.1:{port}/switch", fault.continuer,
                                         second_url)) as client:  # fmt: skip
                if fault.scenario == "refused":
                    relay.__exit__(None, None, None)
                    listening = False
                else:
                    space.switch = fault.scenario
                first, response = await timed(client, fault.stream)
                seen = saw(response, fault.stream)
                after = [(await timed(client, fault.stream))[0] for _ in range(3)]
        finally:
            if listening:
                relay.__exit__(None, None, None)
            space.switch = "ok"
        firsts.append(first)
        nexts.append(statistics.median(after))
    return {"first": statistics.median(firsts), "next": statistics.median(nexts), "saw": seen}


async def flapping(space: FaultSpace, second_url: str, outage: float = 6.0) -> dict[str, Any]:
    """The first upstream fails every call (HTTP 500) for ``outage`` seconds under steady
    traffic, then serves: how long after its recovery it serves again, and how often it was
    asked meanwhile."""
    posts = "error500 POST /gradio_api/call/predict"
    space.switch = "ok"
    async with gateway(upstreams(f"{space.url}/switch", "tgi", second_url)) as client:
        space.switch = "error500"
        before = space.hits[posts]
        started = time.monotonic()
        while time.monotonic() - started < outage:
            await timed(client, False)
            await asyncio.sleep(0.2)
        asked = space.hits[posts] - before
        space.switch = "ok"
        recovered = time.monotonic()
        while (await timed(client, False))[1].headers.get("x-upstream") != "space":
            await asyncio.sleep(0.05)
        back = time.monotonic() - recovered
    return {"back": back, "asked": asked, "outage": outage}


async def baseline(kind: str, url: str, rounds: int, stream: bool) -> float:
    """The latency of the same request served by the second upstream alone."""
    times = []
    table = f'[[upstreams]]\nname = "second"\nkind = "{kind}"\nurl = "{url}"\n'
    for _ in range(rounds):
        async with gateway(table) as client:
            await timed(client, stream)
            times.append(statistics.median([(await timed(client, stream))[0] for _ in range(3)]))
    return statistics.median(times)


async def main_async(rounds: int) -> list[str]:
    tgi = FakeTGI()
    tgi.answer = True
    openai = FakeOpenAI()
    openai.answer = True  # a restarted answer repeats what was sent, as greedy decoding does
    with (
        FaultSpace() as space,
        ThreadServer(tgi.app(), lifespan="off") as tgi_server,
        ThreadServer(openai.app(), lifespan="off") as openai_server,
    ):
        urls = {"tgi": tgi_server.url, "openai": openai_server.url}
        base = {
            (kind, stream): await baseline(kind, url, rounds, stream)
            for kind, url in urls.items()
            for stream in (False, True)
        }
        lines = [
            "baseline (served by the second upstream alone), ms: "
            + ", ".join(
                f"{kind}{' streamed' if stream else ''} {seconds * 1000:.1f}"
                for (kind, stream), seconds in base.items()
            ),
            "",
            "| fault of the first upstream | what the client got | added to the first "
            "request | added to the next ones |",
            "|---|---|---|---|",
        ]
        for fault in FAULTS:
            found = await measure(fault, space, urls[fault.continuer], rounds)
            b = base[(fault.continuer, fault.stream)]
            lines.append(
                f"| {fault.name} | {found['saw']} | {(found['first'] - b) * 1000:+.0f} ms | "
                f"{(found['next'] - b) * 1000:+.0f} ms |"
            )
            print(lines[-1], flush=True)
        flap = await flapping(space, urls["tgi"])
        lines.append(
            f"| HTTP 500 for {flap['outage']:g} s under traffic (5 requests a second), then "
            f"serving | 200 from tgi, then from space again {flap['back']:.1f} s after its "
            f"recovery | asked {flap['asked']} times while down | |"
        )
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="fresh gateways per fault")
    args = parser.parse_args()
    lines = asyncio.run(main_async(args.rounds))
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
