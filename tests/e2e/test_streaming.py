"""Streaming on real sockets: tokens arrive as they are generated (real streaming Gradio app,
and the mock), a client that leaves closes the upstream stream, rewrites stay correct."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from tests.e2e.conftest import GradioServer, gateway_server
from tests.support.audit import AUDIT
from tests.support.fault_space import FaultSpace
from tests.support.servers import wait_until

pytestmark = pytest.mark.e2e


def read_events(url: str, body: dict[str, object]) -> list[tuple[float, str, dict[str, object]]]:
    """(arrival time, event, data) for each SSE event of one streamed request."""
    found = []
    started = time.monotonic()
    with httpx.stream("POST", f"{url}/api/chat", json=body, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        buffer = ""
        for text in response.iter_text():
            buffer += text
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                AUDIT.add(block)
                fields = dict(line.split(": ", 1) for line in block.splitlines())
                found.append(
                    (time.monotonic() - started, fields["event"], orjson.loads(fields["data"]))
                )
    return found


def test_real_gradio_stream_arrives_incrementally(gradio_server: GradioServer) -> None:
    with gateway_server(upstream_url=f"{gradio_server.url}/full") as url:
        found = read_events(
            url, {"inputs": "hello", "stream": True, "parameters": {"max_new_tokens": 5}}
        )
    tokens = [(t, data["text"]) for t, name, data in found if name == "token"]
    assert [text for _, text in tokens] == ["Rest", " well", " and", " drink", " water."]
    # The Space yields a word every 50 ms: the first token is long done before the last.
    assert tokens[-1][0] - tokens[0][0] > 0.12
    assert found[-1][1] == "done"
    assert found[-1][2]["generated_text"] == "Rest well and drink water."
    assert "/predict_stream" in str(gradio_server.received()[-1]["endpoint"])


def test_mock_stream_is_paced(gradio_server: GradioServer) -> None:
    with gateway_server(mock_token_delay_ms=20) as url:
        found = read_events(url, {"inputs": "tips for sleep", "stream": True})
    times = [t for t, name, _ in found if name == "token"]
    assert len(times) > 20
    assert times[-1] - times[0] > 0.3  # 20 ms a token, not all at once


def test_client_disconnect_closes_the_upstream_stream(fault_space: FaultSpace) -> None:
    with gateway_server(upstream_url=f"{fault_space.url}/slowstream") as url:
        with httpx.stream(
            "POST", f"{url}/api/chat", json={"inputs": "go", "stream": True}, timeout=30
        ) as response:
            for line in response.iter_lines():
                if line.startswith("event: token"):
                    break
            left_at = time.monotonic()
        closed = wait_until(
            lambda: dict(fault_space.closed_at), timeout=5, what="the upstream stream to close"
        )
    assert min(closed.values()) - left_at < 1.0


def test_rewrites_and_unicode_stay_correct(fault_space: FaultSpace) -> None:
    with gateway_server(upstream_url=f"{fault_space.url}/rewrite") as url:
        found = read_events(url, {"inputs": "go", "stream": True, "model": "llama-2-7b"})
    assert [(name, data.get("text")) for _, name, data in found[:-1]] == [
        ("token", "Caf"),
        ("token", "é 😀 wrold"),
        ("replace", "Café 😀 world, friend"),
        ("token", "!"),
    ]
    assert found[-1][2]["generated_text"] == "Café 😀 world, friend!"


def test_a_space_endpoint_that_does_not_stream_still_streams_one_delta(
    gradio_server: GradioServer,
) -> None:
    with gateway_server(upstream_url=f"{gradio_server.url}/seed") as url:
        found = read_events(url, {"inputs": "hello", "stream": True, "model": "llama-2-7b"})
    assert [name for _, name, _ in found] == ["token", "done"]
    assert found[0][2]["text"] == found[1][2]["generated_text"]
    assert found[1][2]["generated_text"].endswith("] hello")
