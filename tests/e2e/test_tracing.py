"""OpenTelemetry traces against a real OTLP/HTTP receiver on a socket (the exported protobuf
decoded): one trace per request with its parts as spans, W3C trace context in and out (the
``traceparent`` a real gradio app received), no prompt text or secret in any span, an
exporter that refuses or hangs never in the way, and nothing of OpenTelemetry loaded when
tracing is off."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import GradioServer, audited_client, gateway_server
from tests.support.audit import CLIENT_AUTH, TOKEN
from tests.support.fault_space import FaultSpace
from tests.support.otlp_receiver import OTLPReceiver, Span
from tests.support.processes import python_output
from tests.support.servers import ThreadServer, wait_until

pytestmark = pytest.mark.e2e

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_PARENT = "00f067aa0ba902b7"
SERVER, CLIENT = 2, 3  # the protobuf's SpanKind values


@pytest.fixture
def receiver() -> Iterator[tuple[OTLPReceiver, str]]:
    found = OTLPReceiver()
    with ThreadServer(found.app(), lifespan="off") as server:
        yield found, server.url


def spans_of(found: OTLPReceiver, trace_id: str, count: int) -> list[Span]:
    return wait_until(
        lambda: (spans := found.of_trace(trace_id)) and len(spans) >= count and spans,
        timeout=10,
        what=f"{count} spans of trace {trace_id}",
    )


def by_name(spans: list[Span]) -> dict[str, list[Span]]:
    named: dict[str, list[Span]] = {}
    for span in spans:
        named.setdefault(span.name, []).append(span)
    return named


def test_a_miss_and_a_hit_each_make_one_trace_that_continues_the_callers(
    receiver: tuple[OTLPReceiver, str], gradio_server: GradioServer
) -> None:
    found, url = receiver
    marker = f"trace {uuid.uuid4().hex[:8]}"
    body = {"inputs": f"{marker} how do I sleep better?"}
    traceparent = f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"
    with gateway_server(
        upstream_url=f"{gradio_server.url}/full", otel_exporter_otlp_endpoint=url
    ) as gateway:
        with audited_client(gateway) as client:
            miss = client.post(
                "/api/chat",
                json=body,
                headers={"traceparent": traceparent, "Authorization": CLIENT_AUTH},
            )
            hit = client.post("/api/chat", json=body)
        assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
        spans = spans_of(found, INCOMING_TRACE, 5)
    named = by_name(spans)
    (request,) = named["POST /api/chat"]
    assert request.kind == SERVER and request.parent_id == INCOMING_PARENT
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["proxy.cache"] == "MISS"
    assert request.attributes["http.route"] == "/api/chat"
    for part in ("guard", "cache lookup", "cache store"):
        (span,) = named[part]
        assert span.parent_id == request.span_id, part
    assert named["cache lookup"][0].attributes["proxy.cache.hit"] is False
    (attempt,) = named["chat llama-2-7b-chat"]
    assert attempt.kind == CLIENT and attempt.parent_id == request.span_id
    attributes = attempt.attributes
    assert attributes["gen_ai.request.model"] == "llama-2-7b-chat"
    assert attributes["gen_ai.response.model"] == "llama-2-7b-chat"
    assert attributes["gen_ai.request.max_tokens"] == 512  # the model's default
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert (attributes["proxy.upstream"], attributes["proxy.attempt"]) == ("gradio", 1)
    assert attributes["proxy.outcome"] == "ok"
    # The Space was called with the attempt's own traceparent: its traces join this one.
    (call,) = [e for e in gradio_server.received() if marker in e["tail"]]
    assert call["headers"]["traceparent"].split("-")[1:3] == [INCOMING_TRACE, attempt.span_id]
    # The hit is a trace of its own: the lookup found it, nothing went upstream.
    hit_request = [s for s in found.named("POST /api/chat") if s.trace_id != INCOMING_TRACE][-1]
    hit_spans = by_name(spans_of(found, hit_request.trace_id, 3))
    assert hit_spans["cache lookup"][0].attributes["proxy.cache.hit"] is True
    assert "chat llama-2-7b-chat" not in hit_spans
    # Nothing sensitive: no prompt text, no token, no caller's credential, in any span.
    everything = json.dumps([[s.name, s.attributes] for s in found.spans], default=str)
    assert marker not in everything and TOKEN not in everything
    assert CLIENT_AUTH not in everything and "sleep better" not in everything


def test_a_stream_a_failover_and_a_continuation_are_spans_of_one_trace(
    receiver: tuple[OTLPReceiver, str],
    gradio_server: GradioServer,
    fault_space: FaultSpace,
    tmp_path: Path,
) -> None:
    found, url = receiver
    upstreams = tmp_path / "upstreams.toml"
    upstreams.write_text(
        f'[[upstreams]]\nname = "first"\nkind = "gradio"\nurl = "{fault_space.url}/cutmid"\n\n'
        f'[[upstreams]]\nname = "second"\nkind = "gradio"\nurl = "{gradio_server.url}/c"\n'
        "priority = 1\n"
    )
    body = {"inputs": f"broken {uuid.uuid4().hex[:8]} how do I recover?", "stream": True}
    with gateway_server(
        upstreams_file=str(upstreams), otel_exporter_otlp_endpoint=url, cache_enabled=False
    ) as gateway:
        with audited_client(gateway) as client:
            reply = client.post("/api/chat", json=body)
        assert "event: done" in reply.text
        request = wait_until(lambda: found.named("POST /api/chat"), timeout=10, what="it")[-1]
        spans = spans_of(found, request.trace_id, 4)
    attempts = sorted(
        (s for s in spans if s.name == "chat llama-2-7b-chat"),
        key=lambda s: s.attributes["proxy.attempt"],
    )
    assert [a.attributes["proxy.upstream"] for a in attempts] == ["first", "second"]
    first, second = attempts
    assert first.attributes["proxy.outcome"] == "upstream_disconnected" and first.status == 2
    assert first.attributes["proxy.time_to_first_token_ms"] > 0  # it broke after output
    assert second.attributes["proxy.continuation"] is True
    assert second.attributes["proxy.outcome"] == "ok"
    assert request.attributes["proxy.upstreams"] == ["first", "second"]


@pytest.mark.parametrize("mode", ["refuse", "hang"])
def test_a_collector_that_refuses_or_hangs_never_slows_a_request(
    receiver: tuple[OTLPReceiver, str], mode: str
) -> None:
    found, url = receiver
    found.mode = mode
    with gateway_server(otel_exporter_otlp_endpoint=url, mock_token_delay_ms=0) as gateway:
        with audited_client(gateway) as client:
            started = time.monotonic()
            replies = [
                client.post("/api/chat", json={"inputs": f"question {i}"}) for i in range(30)
            ]
            took = time.monotonic() - started
        wait_until(lambda: found.exports > 0, timeout=10, what="an export attempt")
        stopping = time.monotonic()
    stopped_in = time.monotonic() - stopping
    assert [r.status_code for r in replies] == [200] * 30
    assert took < 3  # as without tracing: the export runs beside, never in the request
    assert stopped_in < 8  # the shutdown flush is bounded whatever the collector does


def test_with_tracing_off_nothing_of_opentelemetry_is_imported() -> None:
    script = (
        "import sys, asyncio, httpx\n"
        "from asgi_lifespan import LifespanManager\n"
        "from proxy import Settings, create_app\n"
        "async def main():\n"
        "    app = create_app(Settings(mock_token_delay_ms=0))\n"
        "    async with LifespanManager(app) as m:\n"
        "        t = httpx.ASGITransport(app=m.app)\n"
        "        async with httpx.AsyncClient(transport=t, base_url='http://gw') as c:\n"
        "            r = await c.post('/api/chat', json={'inputs': 'hi', 'stream': True})\n"
        "            assert r.status_code == 200\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    assert python_output(script).strip() == "[]"


def test_the_access_log_names_the_trace(
    receiver: tuple[OTLPReceiver, str], caplog: pytest.LogCaptureFixture
) -> None:
    found, url = receiver
    caplog.set_level("INFO", logger="proxy.access")
    traceparent = f"00-{INCOMING_TRACE}-{INCOMING_PARENT}-01"
    with gateway_server(otel_exporter_otlp_endpoint=url) as gateway:
        httpx.post(
            f"{gateway}/api/chat", json={"inputs": "hello"}, headers={"traceparent": traceparent}
        )
    logged: list[Any] = [
        r.access  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "proxy.access" and hasattr(r, "access")
    ]
    assert logged and logged[-1]["trace_id"] == INCOMING_TRACE
