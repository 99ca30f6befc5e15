"""Several upstreams behind one gateway (UPSTREAMS_FILE), against real peers: the real Gradio
replicas, the scripted fault Space and the in-test TGI and OpenAI servers.

Weights and priorities counted at each upstream; every failure before output answered by the
next upstream, the failed one skipped for the right time and then used again; a cold Space
woken in the background; streams cut or stalled mid-way finished by another upstream as one
answer; nowhere to continue ending in an error event; the cache and single-flight across
replicas; what everything looks like in headers, metrics and /readyz.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from proxy.core.generation import estimate_tokens
from tests.conftest import gateway_client
from tests.e2e.conftest import GradioServer
from tests.support.fake_llm_servers import ANSWER, FakeOpenAI, FakeTGI
from tests.support.fault_space import FaultSpace
from tests.support.servers import TcpRelay, ThreadServer, free_port, wait_for

pytestmark = pytest.mark.e2e

MODEL = "llama-2-7b-chat"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def write_upstreams(path: Path, tables: list[dict[str, Any]]) -> str:
    lines = []
    for table in tables:
        lines.append("[[upstreams]]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return str(path)


@asynccontextmanager
async def routed(
    tmp_path: Path, tables: list[dict[str, Any]], **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    values = {
        "upstreams_file": write_upstreams(tmp_path / "upstreams.toml", tables),
        "cache_enabled": False,
        "rate_limit": "off",
        "upstream_connect_timeout": 2.0,
        "upstream_retries": 0,
        "upstream_cooldown": 1.5,
        "upstream_wake_interval": 0.3,
        "failover_retries": 0,  # straight to the next upstream (the retries in place: below)
        **settings,
    }
    async with gateway_client(**values) as client:
        yield client


def gradio(name: str, url: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "kind": "gradio", "url": url, **more}


def tail_calls(server: GradioServer, marker: str) -> list[dict[str, Any]]:
    return [entry for entry in server.received() if marker in entry["tail"]]


def sse(text: str) -> list[tuple[str, Any]]:
    found = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((lines["event"], orjson.loads(lines["data"])))
    return found


def streamed_text(found: list[tuple[str, Any]]) -> str:
    text = ""
    for name, data in found:
        if name == "token":
            text += data["text"]
        elif name == "replace":
            text = data["text"]
    return text


@pytest.fixture
def switch(fault_space: FaultSpace) -> Iterator[FaultSpace]:
    """The fault Space's ``switch`` scenario, back to ``ok`` after the test."""
    fault_space.switch = "ok"
    yield fault_space
    fault_space.switch = "ok"


async def test_weights_and_priorities_hold_over_many_requests(
    tmp_path: Path, gradio_server: GradioServer
) -> None:
    tables = [
        gradio("a", f"{gradio_server.url}/a", weight=3),
        gradio("b", f"{gradio_server.url}/b"),
        gradio("c", f"{gradio_server.url}/c", priority=1),
    ]
    marker = f"weights-{time.monotonic_ns()}"
    async with routed(tmp_path, tables) as client:
        named: Counter[str] = Counter()
        for index in range(40):
            response = await client.post("/api/chat", json={"inputs": f"{marker} {index}"})
            assert response.status_code == 200
            named[response.headers["x-upstream"]] += 1
    counted = Counter(entry["app"] for entry in tail_calls(gradio_server, marker))
    assert counted == {"a": 30, "b": 10}  # counted where the calls arrived
    assert named == counted


# Each failure before output, the time the failed upstream is then skipped (None: until a
# background wake-up call finds it up), and what shows it was skipped.
FAULTS = [
    ("reset", 1.5),  # the connection reset: the general cool-down
    ("error500", 1.5),
    ("busy2", 2.0),  # 503 "Queue is full" with Retry-After: 2
    ("ratelimit2", 2.0),  # 429 with Retry-After: 2
    ("stall", 1.5),  # no first token within the first-token timeout
    ("asleep", None),  # the HTML sleeping page: cold, woken in the background
]


@pytest.mark.parametrize(("scenario", "skipped_for"), FAULTS)
async def test_each_failure_before_output_goes_to_the_next_upstream_and_is_skipped_for_its_time(
    tmp_path: Path,
    gradio_server: GradioServer,
    switch: FaultSpace,
    scenario: str,
    skipped_for: float | None,
) -> None:
    tables = [
        # Silence: no first token within 1 s on a stream, no byte within 1 s on a whole reply.
        gradio(
            "flaky", f"{switch.url}/switch", upstream_first_token_timeout=1, upstream_read_timeout=1
        ),
        gradio("steady", f"{gradio_server.url}/b", priority=1),
    ]
    posts, wakes = f"{scenario} POST /gradio_api/call/predict", f"{scenario} GET /config"
    before = switch.hits[posts], switch.hits[wakes]  # the fault Space serves every test
    async with routed(tmp_path, tables) as client:

        async def ask() -> httpx.Response:
            response = await client.post("/api/chat", json={"inputs": f"fault {scenario}"})
            assert response.status_code == 200, response.text
            return response

        switch.switch = scenario
        failed_at = time.monotonic()
        first = await ask()
        assert first.headers["x-upstream"] == "steady"
        assert switch.hits[posts] == before[0] + 1
        assert 'desc="flaky upstream_' in first.headers["server-timing"]
        assert 'desc="steady ok"' in first.headers["server-timing"]
        second = await ask()
        assert second.headers["x-upstream"] == "steady"
        assert switch.hits[posts] == before[0] + 1  # skipped: not asked again
        switch.switch = "ok"

        async def back() -> bool:
            return (await ask()).headers["x-upstream"] == "flaky"

        deadline = time.monotonic() + 15
        while not await back():
            assert time.monotonic() < deadline, "the failed upstream never got traffic again"
            await asyncio.sleep(0.05)
        if skipped_for is not None:
            assert time.monotonic() - failed_at >= skipped_for - 0.2
        else:  # the wake-up call is what found it up
            assert switch.hits[wakes] > before[1]


async def test_a_refused_upstream_is_skipped_then_used_once_it_listens(
    tmp_path: Path, gradio_server: GradioServer, switch: FaultSpace
) -> None:
    port = free_port()
    tables = [
        gradio("late", f"http://127.0.0.1:{port}/switch"),
        gradio("steady", f"{gradio_server.url}/b", priority=1),
    ]
    async with routed(tmp_path, tables) as client:
        for _ in range(3):
            response = await client.post("/api/chat", json={"inputs": "refused first"})
            assert (response.status_code, response.headers["x-upstream"]) == (200, "steady")
        ready = (await client.get("/readyz")).json()
        assert ready["upstreams"]["late"] in ("cold", "cooling")
        with TcpRelay(port, switch.port):

            async def served_by_late() -> bool:
                response = await client.post("/api/chat", json={"inputs": "refused first"})
                return response.headers["x-upstream"] == "late"

            deadline = time.monotonic() + 15
            while not await served_by_late():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)


async def test_every_upstream_cold_or_out_of_quota_gives_the_smallest_retry_after(
    tmp_path: Path, fault_space: FaultSpace
) -> None:
    tables = [
        gradio("sleepy", f"{fault_space.url}/asleep"),  # Retry-After: 20
        gradio("limited", f"{fault_space.url}/ratelimit", priority=1),  # Retry-After: 42
    ]
    async with routed(tmp_path, tables) as client:
        for _ in range(2):  # the first tries both; the second skips both
            response = await client.post("/api/chat", json={"inputs": "anyone?"})
            assert response.status_code == 503
            assert response.json()["code"] == "upstream_starting"
            assert response.headers["retry-after"] == "20"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["upstreams"] == {"sleepy": "cold", "limited": "cooling"}
    async with routed(tmp_path, tables, fallback="mock") as client:
        response = await client.post("/api/chat", json={"inputs": "How do I sleep better?"})
        assert (response.status_code, response.headers["x-upstream"]) == (200, "mock-fallback")
    tables = [
        gradio("limited", f"{fault_space.url}/ratelimit"),  # 42
        gradio("quota", f"{fault_space.url}/quota"),  # 60
    ]
    async with routed(tmp_path, tables) as client:
        for _ in range(2):
            response = await client.post("/api/chat", json={"inputs": "anyone?"})
            assert (response.status_code, response.headers["retry-after"]) == (429, "42")


CONTINUED = [
    ("cutmid", {}),  # the connection reset after three tokens
    ("stallmid", {"upstream_read_timeout": 1}),  # silence after three tokens
]


@pytest.mark.parametrize(("scenario", "options"), CONTINUED)
async def test_a_gradio_stream_broken_mid_way_is_finished_by_another_space(
    tmp_path: Path,
    gradio_server: GradioServer,
    fault_space: FaultSpace,
    scenario: str,
    options: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    tables = [
        gradio("first", f"{fault_space.url}/{scenario}", **options),
        gradio("second", f"{gradio_server.url}/c", priority=1),
    ]
    marker = f"continue-{scenario}-{time.monotonic_ns()}"
    body = {"inputs": f"{marker} how do I recover from a cold?", "stream": True}
    body["parameters"] = {"max_new_tokens": 64}
    async with routed(tmp_path, tables) as client:
        response = await client.post("/api/chat", json=body)
        metrics = (await client.get("/metrics")).text
    assert response.status_code == 200
    assert response.headers["x-upstream"] == "first"  # sent before the break
    found = sse(response.text)
    names = [name for name, _ in found]
    assert names.count("done") == 1 and "error" not in names
    # One answer: the first Space's "Rest well and", the second's continuation, nothing twice.
    assert streamed_text(found) == ANSWER
    done = found[-1][1]
    assert done["generated_text"] == ANSWER
    assert done["upstream"] == "first, second"
    assert done["finish_reason"] == "stop"
    assert done["usage"]["estimated"] is True
    (call,) = [e for e in tail_calls(gradio_server, "how do I recover") if e["app"] == "c"][-1:]
    # The second Space got the prompt plus the prefix up to the last word boundary, and the
    # budget less what the prefix took.
    assert call["tail"].endswith("[/INST] Rest well")
    assert call["max_new_tokens"] == 64 - estimate_tokens("Rest well")
    assert 'proxy_upstream_continuations_total{upstream="second"} 1.0' in metrics
    logged = [r for r in caplog.records if r.name == "proxy.access"]
    assert logged[0].access["upstream"] == "first, second"  # type: ignore[attr-defined]


async def test_the_openai_route_gets_one_answer_and_one_done(
    tmp_path: Path, gradio_server: GradioServer, fault_space: FaultSpace
) -> None:
    tables = [
        gradio("first", f"{fault_space.url}/cutmid"),
        gradio("second", f"{gradio_server.url}/c", priority=1),
    ]
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What helps a cold?"}],
        "stream": True,
        "max_tokens": 64,
    }
    async with routed(tmp_path, tables) as client:
        response = await client.post("/v1/chat/completions", json=body)
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines.count("[DONE]") == 1 and lines[-1] == "[DONE]"
    chunks = [orjson.loads(line) for line in lines[:-1]]
    assert not any("error" in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == ANSWER
    finishes = [
        c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]
    ]
    assert finishes == ["stop"]


@pytest.fixture
def tgi_pair() -> Iterator[tuple[FakeTGI, str, FakeTGI, str]]:
    first, second = FakeTGI(), FakeTGI()
    first.answer = second.answer = True
    with (
        ThreadServer(first.app(), lifespan="off") as a,
        ThreadServer(second.app(), lifespan="off") as b,
    ):
        yield first, a.url, second, b.url


@pytest.mark.parametrize("fault", ["cut_after", "stall_after"])
async def test_a_tgi_stream_broken_mid_way_is_finished_by_another_tgi(
    tmp_path: Path, tgi_pair: tuple[FakeTGI, str, FakeTGI, str], fault: str
) -> None:
    first, first_url, second, second_url = tgi_pair
    setattr(first, fault, 2)
    tables = [
        {"name": "tgi-a", "kind": "tgi", "url": first_url, "upstream_read_timeout": 1},
        {"name": "tgi-b", "kind": "tgi", "url": second_url, "priority": 1},
    ]
    body = {
        "inputs": "How do I treat a cold?",
        "stream": True,
        "parameters": {"max_new_tokens": 40},
    }
    async with routed(tmp_path, tables) as client:
        response = await client.post("/api/chat", json=body)
    found = sse(response.text)
    assert streamed_text(found) == ANSWER
    assert [name for name, _ in found].count("done") == 1
    assert found[-1][1]["upstream"] == "tgi-a, tgi-b"
    sent = second.requests[-1][2]
    original = first.requests[-1][2]
    # "Rest well" was sent: continued from "Rest", the word before the partial " well".
    assert sent["inputs"] == original["inputs"] + " Rest"
    assert sent["parameters"]["max_new_tokens"] == 40 - estimate_tokens("Rest")


async def test_an_openai_server_with_assistant_prefill_continues(
    tmp_path: Path, fault_space: FaultSpace
) -> None:
    server = FakeOpenAI()
    server.answer = True
    with ThreadServer(server.app(), lifespan="off") as openai_server:
        tables = [
            gradio("space", f"{fault_space.url}/cutmid"),
            {
                "name": "vllm",
                "kind": "openai",
                "url": f"{openai_server.url}/v1",
                "assistant_prefill": True,
                "priority": 1,
            },
        ]
        async with routed(tmp_path, tables) as client:
            response = await client.post(
                "/api/chat", json={"inputs": "What helps a cold?", "stream": True}
            )
    found = sse(response.text)
    assert streamed_text(found) == ANSWER
    _, _, sent = server.requests[-1]
    assert sent["messages"][-1] == {"role": "assistant", "content": "Rest well"}
    assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False


async def test_with_nowhere_to_continue_a_chat_stream_is_restarted_and_v1_gets_the_error(
    tmp_path: Path, fault_space: FaultSpace
) -> None:
    server = FakeOpenAI()  # no assistant prefill: it cannot continue an answer
    with ThreadServer(server.app(), lifespan="off") as openai_server:
        tables = [
            gradio("space", f"{fault_space.url}/cutmid"),
            {"name": "api", "kind": "openai", "url": openai_server.url, "priority": 1},
        ]
        async with routed(tmp_path, tables) as client:
            chat = await client.post("/api/chat", json={"inputs": "Help?", "stream": True})
            metrics = (await client.get("/metrics")).text
        asked_again = [r for r in server.requests if r[0].endswith("/completions")]
        async with routed(tmp_path, tables) as client:  # the broken Space is first again
            completion = await client.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "Help?"}],
                      "stream": True},
            )  # fmt: skip
    found = sse(chat.text)
    names = [name for name, _ in found]
    # /api/chat: answered again from the prompt by the upstream that cannot continue; its
    # answer does not repeat what was sent ("Rest well and"), so a replace event carries it.
    assert len(asked_again) == 1 and "error" not in names and names.count("done") == 1
    assert "replace" in names
    done = found[-1][1]
    assert done["generated_text"] == streamed_text(found) and done["generated_text"].startswith(
        "Echo:"
    )
    assert done["upstream"] == "space, api"
    assert 'proxy_upstream_restarts_total{upstream="api"} 1.0' in metrics
    # /v1 cannot take text back: the stream ends with an error, never a [DONE].
    assert "[DONE]" not in completion.text and '"error"' in completion.text
    # Not asked to start the /v1 answer again.
    assert len([r for r in server.requests if r[0].endswith("/completions")]) == 1


async def test_a_restart_that_repeats_what_was_sent_streams_only_the_rest(
    tmp_path: Path, fault_space: FaultSpace
) -> None:
    server = FakeOpenAI()
    server.answer = True  # deterministic: the same answer again, from the start
    with ThreadServer(server.app(), lifespan="off") as openai_server:
        tables = [
            gradio("space", f"{fault_space.url}/cutmid"),
            {"name": "api", "kind": "openai", "url": openai_server.url, "priority": 1},
        ]
        async with routed(tmp_path, tables) as client:
            chat = await client.post("/api/chat", json={"inputs": "Help?", "stream": True})
    found = sse(chat.text)
    names = [name for name, _ in found]
    assert "replace" not in names and "error" not in names and names.count("done") == 1
    tokens = "".join(data["text"] for name, data in found if name == "token")
    assert tokens == ANSWER  # "Rest well and" once, then the rest: nothing twice
    assert found[-1][1]["generated_text"] == ANSWER


async def test_the_cache_and_single_flight_span_replicas(
    tmp_path: Path, gradio_server: GradioServer
) -> None:
    tables = [gradio("a", f"{gradio_server.url}/a"), gradio("b", f"{gradio_server.url}/b")]
    marker = f"replicas-{time.monotonic_ns()}"
    async with routed(tmp_path, tables, cache_enabled=True) as client:
        body = {"inputs": f"{marker} SLOW"}  # a second at the Space: the calls overlap
        answers = await asyncio.gather(*(client.post("/api/chat", json=body) for _ in range(5)))
        again = await client.post("/api/chat", json=body)  # round robin would pick the other
    assert all(a.status_code == 200 for a in answers)
    assert len(tail_calls(gradio_server, marker)) == 1
    assert again.headers["x-cache"] == "HIT"
    assert again.json()["generated_text"] == answers[0].json()["generated_text"]


async def test_failover_is_counted_per_upstream(
    tmp_path: Path, gradio_server: GradioServer, fault_space: FaultSpace
) -> None:
    tables = [
        gradio("broken", f"{fault_space.url}/reset"),
        gradio("good", f"{gradio_server.url}/b", priority=1),
    ]
    async with routed(tmp_path, tables) as client:
        await client.post("/api/chat", json={"inputs": "count me"})
        metrics = (await client.get("/metrics")).text
        ready = (await client.get("/readyz")).json()
    assert 'proxy_upstream_failovers_total{upstream="broken"} 1.0' in metrics
    assert 'proxy_upstream_failures_total{code="upstream_disconnected",upstream="broken"} 1.0' in (
        metrics
    )
    assert 'proxy_upstream_calls_total{upstream="good"} 1.0' in metrics
    assert 'proxy_upstream_state{state="cooling",upstream="broken"} 1.0' in metrics
    assert ready["status"] == "ready"
    assert ready["upstreams"] == {"broken": "cooling", "good": "ready"}


@pytest.mark.parametrize("scenario", ["reset", "stall", "busy2"])
async def test_a_stream_that_fails_before_output_is_answered_whole_by_the_next(
    tmp_path: Path, gradio_server: GradioServer, fault_space: FaultSpace, scenario: str
) -> None:
    tables = [
        gradio("flaky", f"{fault_space.url}/{scenario}", upstream_first_token_timeout=1),
        gradio("steady", f"{gradio_server.url}/b", priority=1),
    ]
    async with routed(tmp_path, tables) as client:
        response = await client.post("/api/chat", json={"inputs": "Help?", "stream": True})
    assert (response.status_code, response.headers["x-upstream"]) == (200, "steady")
    found = sse(response.text)
    assert streamed_text(found) == ANSWER
    assert found[-1][0] == "done" and found[-1][1]["upstream"] == "steady"


@pytest.mark.parametrize(
    ("word", "status", "code"),
    [("REFUSED", 422, "upstream_rejected"), ("VALIDATION", 400, "prompt_too_long")],
)
async def test_an_error_about_the_request_itself_does_not_fail_over(
    tmp_path: Path, tgi_pair: tuple[FakeTGI, str, FakeTGI, str], word: str, status: int, code: str
) -> None:
    first, first_url, second, second_url = tgi_pair
    first.answer = second.answer = False  # the servers' fault words apply
    tables = [
        {"name": "tgi-a", "kind": "tgi", "url": first_url},
        {"name": "tgi-b", "kind": "tgi", "url": second_url},
    ]
    async with routed(tmp_path, tables) as client:
        response = await client.post("/api/chat", json={"inputs": f"{word} please"})
        again = await client.post("/api/chat", json={"inputs": "a fine question"})
    assert (response.status_code, response.json()["code"]) == (status, code)
    assert len(first.requests) + len(second.requests) == 2  # asked once, then the next request
    assert again.status_code == 200  # and the upstream that refused is not held against


async def test_a_cold_space_is_woken_at_most_once_per_interval(
    tmp_path: Path, gradio_server: GradioServer, switch: FaultSpace
) -> None:
    tables = [
        gradio("sleepy", f"{switch.url}/switch"),
        gradio("steady", f"{gradio_server.url}/b", priority=1),
    ]
    wakes, calls = "asleep GET /config", "asleep POST /gradio_api/call/predict"
    before = switch.hits[wakes], switch.hits[calls]  # the fault Space serves every test
    async with routed(tmp_path, tables, upstream_wake_interval=30) as client:
        switch.switch = "asleep"
        for _ in range(6):  # the first finds it asleep; the rest skip it
            response = await client.post("/api/chat", json={"inputs": "still asleep?"})
            assert response.headers["x-upstream"] == "steady"
        await wait_for(lambda: switch.hits[wakes] > before[0], timeout=5, what="the wake-up call")
        assert (switch.hits[wakes], switch.hits[calls]) == (before[0] + 1, before[1] + 1)


async def test_a_continuation_that_breaks_too_is_continued_by_the_next(tmp_path: Path) -> None:
    servers = [FakeTGI(), FakeTGI(), FakeTGI()]
    for server in servers:
        server.answer = True
    servers[0].cut_after = 2  # "Rest well" sent
    servers[1].cut_after = 1  # continues from "Rest": repeats " well" (dropped), then is cut
    with (
        ThreadServer(servers[0].app(), lifespan="off") as a,
        ThreadServer(servers[1].app(), lifespan="off") as b,
        ThreadServer(servers[2].app(), lifespan="off") as c,
    ):
        tables = [
            {"name": f"tgi-{i}", "kind": "tgi", "url": s.url, "priority": i}
            for i, s in enumerate((a, b, c))
        ]
        body = {"inputs": "What helps a cold?", "stream": True}
        async with routed(tmp_path, tables) as client:
            response = await client.post("/api/chat", json=body)
    found = sse(response.text)
    assert streamed_text(found) == ANSWER
    assert [name for name, _ in found].count("done") == 1
    assert found[-1][1]["upstream"] == "tgi-0, tgi-1, tgi-2"
    # The client still has "Rest well": the third continues from "Rest" as the second did.
    first, second, third = (s.requests[-1][2]["inputs"] for s in servers)
    assert second == third == first + " Rest"
