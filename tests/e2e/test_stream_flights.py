"""Identical streams share one generation: in one process, across workers and instances
through a real redis-server, with leaders and followers that leave, streams broken mid-way,
and Redis killed mid-flight. Against a real gradio app and the scripted fault Space, with the
gateway on real uvicorn sockets."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import GradioServer, audited_client, gateway_server
from tests.support.fake_llm_servers import ANSWER
from tests.support.fault_space import FaultSpace
from tests.support.processes import Gateway, clean_env, gateway_command, running
from tests.support.redis_server import RedisServer
from tests.support.servers import free_port, wait_until

pytestmark = pytest.mark.e2e


class Streamed:
    """One streamed reply: its status, headers and SSE events."""

    def __init__(self, status: int, headers: httpx.Headers, body: str) -> None:
        self.status = status
        self.headers = headers
        self.events: list[tuple[str, Any]] = []
        for block in body.strip().split("\n\n"):
            if block:
                lines = dict(line.split(": ", 1) for line in block.splitlines())
                self.events.append((lines["event"], orjson.loads(lines["data"])))

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    @property
    def text(self) -> str:
        text = ""
        for name, data in self.events:
            if name == "token":
                text += data["text"]
            elif name == "replace":
                text = data["text"]
        return text

    @property
    def done(self) -> dict[str, Any]:
        (done,) = [data for name, data in self.events if name == "done"]
        return done


def stream(url: str, body: dict[str, Any]) -> Streamed:
    with audited_client(url) as client:
        response = client.post("/api/chat", json={**body, "stream": True})
        return Streamed(response.status_code, response.headers, response.text)


def together(url: str, body: dict[str, Any], count: int) -> list[Streamed]:
    """``count`` identical streams sent at once (a barrier releases them together)."""
    barrier = threading.Barrier(count)

    def one(_: int) -> Streamed:
        barrier.wait(10)
        return stream(url, body)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def joined_before_the_cut(
    url: str, body: dict[str, Any], count: int, fault_space: FaultSpace
) -> list[Streamed]:
    """``count`` identical streams to a ``cutmid`` Space that breaks its stream only once the
    other ``count - 1`` have joined the first one's flight: however slowly each arrives."""
    fault_space.cut_gate = gate = threading.Event()
    try:
        with ThreadPoolExecutor(count) as pool:
            futures = [pool.submit(stream, url, body) for _ in range(count)]
            wait_until(
                lambda: metric(url, "proxy_flight_joins_total", '{via="process"}') == count - 1,
                timeout=15,
                what=f"{count - 1} followers",
            )
            gate.set()
            return [future.result() for future in futures]
    finally:
        gate.set()
        fault_space.cut_gate = None


def stream_calls(server: GradioServer, marker: str) -> int:
    return sum(
        marker in e["tail"] and e["endpoint"] == "/predict_stream" for e in server.received()
    )


def metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{url}/metrics").text
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_twenty_identical_streams_make_one_generation(gradio_server: GradioServer) -> None:
    marker = f"herd {uuid.uuid4().hex[:8]}"
    body = {"inputs": f"{marker} how do I treat a cold?"}
    with gateway_server(upstream_url=f"{gradio_server.url}/full") as url:
        replies = together(url, body, 20)
        joins = metric(url, "proxy_flight_joins_total", '{via="process"}')
        generations = metric(url, "proxy_upstream_duration_seconds_count")
    assert stream_calls(gradio_server, marker) == 1
    assert generations == 1
    assert [r.status for r in replies] == [200] * 20
    # Every follower saw what a lone client would have: the whole answer, one done.
    assert {r.text for r in replies} == {ANSWER}
    assert all(r.names.count("done") == 1 and "error" not in r.names for r in replies)
    assert {r.done["generated_text"] for r in replies} == {ANSWER}
    caches = sorted(r.headers["x-cache"] for r in replies)
    assert caches.count("MISS") == 1 and set(caches) <= {"MISS", "JOINED", "HIT"}
    assert joins == caches.count("JOINED") >= 10  # most arrived while it was generating


def test_json_requests_and_streams_join_each_others_flights(gradio_server: GradioServer) -> None:
    marker = f"mixed {uuid.uuid4().hex[:8]}"
    body = {"inputs": f"{marker} should I rest?"}
    with gateway_server(upstream_url=f"{gradio_server.url}/full") as url:
        with audited_client(url) as client, ThreadPoolExecutor(6) as pool:
            first = pool.submit(stream, url, body)
            wait_until(lambda: stream_calls(gradio_server, marker) == 1, timeout=10, what="it")
            jsons = [pool.submit(client.post, "/api/chat", json=body) for _ in range(3)]
            late = pool.submit(stream, url, body)
            replies = [j.result() for j in jsons]
            leader, follower = first.result(), late.result()
    assert stream_calls(gradio_server, marker) == 1  # the JSON requests did not call /predict
    assert not any(marker in e["tail"] and e["endpoint"] == "/predict"
                   for e in gradio_server.received())  # fmt: skip
    assert leader.headers["x-cache"] == "MISS" and leader.text == ANSWER
    assert [r.json()["generated_text"] for r in replies] == [ANSWER] * 3
    assert {r.headers["x-cache"] for r in replies} <= {"JOINED", "HIT"}
    assert follower.text == ANSWER and follower.done["generated_text"] == ANSWER


def test_a_stream_joins_an_identical_json_request_in_flight(gradio_server: GradioServer) -> None:
    marker = f"SLOW {uuid.uuid4().hex[:8]}"  # the /predict endpoint takes a second
    body = {"inputs": marker}
    with gateway_server(upstream_url=f"{gradio_server.url}/full") as url:
        with audited_client(url) as client, ThreadPoolExecutor(2) as pool:
            answer = pool.submit(client.post, "/api/chat", json=body)
            wait_until(
                lambda: any(marker in e["tail"] for e in gradio_server.received()),
                timeout=10,
                what="the JSON request at the Space",
            )
            joined = stream(url, body)
            reply = answer.result()
    calls = [e["endpoint"] for e in gradio_server.received() if marker in e["tail"]]
    assert calls == ["/predict"]
    assert joined.headers["x-cache"] == "JOINED"
    assert joined.text == reply.json()["generated_text"] == joined.done["generated_text"]


def read_until_token(response: httpx.Response) -> Iterator[str]:
    """The response's lines, read up to its first token; keep the iterator to stay connected
    (closing it, as a loop left with ``break`` does, closes the connection)."""
    lines = response.iter_lines()
    for line in lines:
        if line.startswith("event: token"):
            break
    return lines


def slow_body(marker: str) -> dict[str, Any]:
    # About 25 words of the slow stream (a word every 0.1 s), cut at the budget.
    return {"inputs": marker, "stream": True, "parameters": {"max_new_tokens": 40}}


def posts(fault_space: FaultSpace) -> int:
    return fault_space.hits["slowstream POST /gradio_api/call/predict"]


def test_the_leader_leaving_does_not_end_the_generation_for_followers(
    fault_space: FaultSpace,
) -> None:
    body = slow_body(f"leader leaves {uuid.uuid4().hex[:8]}")
    before = posts(fault_space)
    with gateway_server(upstream_url=f"{fault_space.url}/slowstream") as url:
        with httpx.stream("POST", f"{url}/api/chat", json=body, timeout=30) as leader:
            lines = read_until_token(leader)
            with ThreadPoolExecutor(3) as pool:
                followers = [pool.submit(stream, url, body) for _ in range(3)]
                wait_until(
                    lambda: metric(url, "proxy_flight_joins_total", '{via="process"}') == 3,
                    timeout=10,
                    what="three followers",
                )
                lines.close()  # the leader leaves
        # The leader has left; the followers are served to the end.
        replies = [f.result() for f in followers]
        again = stream(url, body)
    assert posts(fault_space) - before == 1
    assert [r.headers["x-cache"] for r in replies] == ["JOINED"] * 3
    texts = {r.done["generated_text"] for r in replies}
    assert len(texts) == 1 and all(r.text == r.done["generated_text"] for r in replies)
    assert {r.done["finish_reason"] for r in replies} == {"length"}
    # The answer completed and was cached once: the next ask is a hit with the same text.
    assert again.headers["x-cache"] == "HIT" and again.text in texts


def test_when_every_listener_has_left_the_upstream_call_is_cancelled_within_a_second(
    fault_space: FaultSpace,
) -> None:
    body = slow_body(f"all leave {uuid.uuid4().hex[:8]}")
    body["parameters"] = {"max_new_tokens": 1000}
    fault_space.closed_at.clear()
    with gateway_server(upstream_url=f"{fault_space.url}/slowstream") as url:
        with httpx.stream("POST", f"{url}/api/chat", json=body, timeout=30) as leader:
            lines = read_until_token(leader)
            with httpx.stream("POST", f"{url}/api/chat", json=body, timeout=30) as follower:
                assert follower.headers["x-cache"] == "JOINED"
                read_until_token(follower).close()  # the follower leaves
            time.sleep(0.5)  # one listener left: the generation goes on for the other
            assert not fault_space.closed_at
            assert next(lines)  # the leader still gets its stream
            lines.close()
        left_at = time.monotonic()
        closed = wait_until(
            lambda: dict(fault_space.closed_at), timeout=5, what="the upstream stream to close"
        )
    assert min(closed.values()) - left_at < 1.0


def test_a_stream_broken_mid_way_is_continued_once_for_every_follower(
    tmp_path: Path, gradio_server: GradioServer, fault_space: FaultSpace
) -> None:
    upstreams = tmp_path / "upstreams.toml"
    upstreams.write_text(
        f'[[upstreams]]\nname = "first"\nkind = "gradio"\nurl = "{fault_space.url}/cutmid"\n\n'
        f'[[upstreams]]\nname = "second"\nkind = "gradio"\nurl = "{gradio_server.url}/c"\n'
        "priority = 1\n"
    )
    marker = f"broken {uuid.uuid4().hex[:8]}"
    body = {"inputs": f"{marker} how do I recover from a cold?"}
    before = fault_space.hits["cutmid POST /gradio_api/call/predict"]
    with gateway_server(upstreams_file=str(upstreams), upstream_retries=0) as url:
        replies = joined_before_the_cut(url, body, 8, fault_space)
        continuations = metric(url, "proxy_upstream_continuations_total", '{upstream="second"}')
    assert fault_space.hits["cutmid POST /gradio_api/call/predict"] - before == 1
    assert continuations == 1
    continued = [e for e in gradio_server.received() if marker in e["tail"] and e["app"] == "c"]
    assert len(continued) == 1
    assert all(r.text == ANSWER and r.names.count("done") == 1 for r in replies)
    assert {r.done["upstream"] for r in replies} == {"first, second"}


def test_with_nowhere_to_continue_every_follower_gets_the_same_error_and_no_done(
    fault_space: FaultSpace,
) -> None:
    body = {"inputs": f"nowhere {uuid.uuid4().hex[:8]}"}
    before = fault_space.hits["cutmid POST /gradio_api/call/predict"]
    with gateway_server(upstream_url=f"{fault_space.url}/cutmid", upstream_retries=0) as url:
        replies = joined_before_the_cut(url, body, 6, fault_space)
    assert fault_space.hits["cutmid POST /gradio_api/call/predict"] - before == 1
    assert all(r.status == 200 and "done" not in r.names for r in replies)
    errors = {orjson.dumps({k: v for k, v in r.events[-1][1].items() if k != "request_id"})
              for r in replies}  # fmt: skip
    assert len(errors) == 1 and all(r.names[-1] == "error" for r in replies)
    assert replies[0].events[-1][1]["code"] == "upstream_disconnected"
    assert {r.text for r in replies} == {"Rest well and"}  # what was sent stays


def two_instances(
    redis: RedisServer, upstream: str, **extra: str
) -> tuple[int, int, dict[str, str]]:
    env = clean_env(UPSTREAM_URL=upstream, REDIS_URL=redis.url, **extra)
    return free_port(), free_port(), env


def test_identical_streams_on_two_instances_make_one_generation(
    gradio_server: GradioServer, redis_server: RedisServer
) -> None:
    marker = f"instances {uuid.uuid4().hex[:8]}"
    body = {"inputs": f"{marker} how do I sleep better?"}
    port_a, port_b, env = two_instances(redis_server, f"{gradio_server.url}/full")
    with (
        running(gateway_command(port_a), env, port_a) as a,
        running(gateway_command(port_b), env, port_b) as b,
    ):
        with ThreadPoolExecutor(2) as pool:
            batches = list(pool.map(lambda gw: together(gw.url, body, 8), (a, b)))
        redis_joins = sum(
            metric(gw.url, "proxy_flight_joins_total", '{via="redis"}') for gw in (a, b)
        )
    replies = batches[0] + batches[1]
    assert stream_calls(gradio_server, marker) == 1
    assert {r.text for r in replies} == {ANSWER}
    assert all(r.names.count("done") == 1 for r in replies)
    assert [r.headers["x-cache"] for r in replies].count("MISS") == 1
    assert redis_joins <= 1  # the other instance followed once, its requests joined it there
    # The stream in flight lives under a hashed key, with no prompt text in Redis.
    keys = redis_server.client().keys("proxy:v1:flight:*")
    assert all(marker.encode() not in key for key in keys)


def test_two_workers_share_one_generation(
    gradio_server: GradioServer, redis_server: RedisServer
) -> None:
    marker = f"workers {uuid.uuid4().hex[:8]}"
    body = {"inputs": f"{marker} is walking good for me?"}
    port = free_port()
    env = clean_env(
        UPSTREAM_URL=f"{gradio_server.url}/full", REDIS_URL=redis_server.url, WEB_CONCURRENCY="2"
    )
    with running(gateway_command(port), env, port) as gw:
        replies = together(gw.url, body, 16)
    assert stream_calls(gradio_server, marker) == 1
    assert {r.text for r in replies} == {ANSWER}
    assert [r.headers["x-cache"] for r in replies].count("MISS") == 1


def stream_from(gw: Gateway, body: dict[str, Any]) -> Streamed:
    return stream(gw.url, body)


def test_a_follower_on_another_instance_keeps_the_generation_alive_when_the_leader_leaves(
    fault_space: FaultSpace, redis_server: RedisServer
) -> None:
    body = slow_body(f"remote {uuid.uuid4().hex[:8]}")
    before = posts(fault_space)
    port_a, port_b, env = two_instances(redis_server, f"{fault_space.url}/slowstream")
    with (
        running(gateway_command(port_a), env, port_a) as a,
        running(gateway_command(port_b), env, port_b) as b,
    ):
        with httpx.stream("POST", f"{a.url}/api/chat", json=body, timeout=30) as leader:
            lines = read_until_token(leader)
            with ThreadPoolExecutor(1) as pool:
                remote = pool.submit(stream_from, b, body)
                wait_until(
                    lambda: metric(b.url, "proxy_flight_joins_total", '{via="redis"}') == 1,
                    timeout=10,
                    what="the follower on B",
                )
                lines.close()  # the leader leaves A
        followed = remote.result()
    assert posts(fault_space) - before == 1
    assert followed.headers["x-cache"] == "JOINED"
    assert followed.names.count("done") == 1
    assert followed.done["finish_reason"] == "length"
    assert followed.text == followed.done["generated_text"] and len(followed.text) > 100


def test_redis_killed_mid_flight_every_instance_finishes_its_answers(
    fault_space: FaultSpace, redis_server: RedisServer
) -> None:
    body = slow_body(f"killed {uuid.uuid4().hex[:8]}")
    port_a, port_b, env = two_instances(redis_server, f"{fault_space.url}/slowstream")
    with (
        running(gateway_command(port_a), env, port_a) as a,
        running(gateway_command(port_b), env, port_b) as b,
    ):
        with ThreadPoolExecutor(4) as pool:
            on_a = [pool.submit(stream_from, a, body) for _ in range(2)]
            time.sleep(0.3)  # A leads; then B's requests follow it through Redis
            on_b = [pool.submit(stream_from, b, body) for _ in range(2)]
            wait_until(
                lambda: metric(b.url, "proxy_flight_joins_total", '{via="redis"}') == 1,
                timeout=10,
                what="B following A",
            )
            time.sleep(0.3)
            started = time.monotonic()
            redis_server.kill()
            replies = [f.result() for f in on_a + on_b]
        took = time.monotonic() - started
    assert took < 15  # never a hang
    assert [r.status for r in replies] == [200] * 4
    for reply in replies:
        assert reply.names.count("done") == 1 and "error" not in reply.names
        assert reply.text == reply.done["generated_text"]
        assert reply.done["finish_reason"] == "length"
