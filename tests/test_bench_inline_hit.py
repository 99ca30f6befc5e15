"""bench.inline_hit, the reference row of bench.ratios: it must do a hit's work (the same
headers, a counted rate limit, an access line), or its figure would flatter the floor."""

from __future__ import annotations

import logging

import httpx
import pytest

from bench.inline_hit import REPLY, inline_hit

BODY = b'{"inputs": "How can I sleep better?"}'
# The names of the gateway's cache hit for a client without Origin, but the server's date.
HIT_HEADERS = {
    "content-type", "content-length", "x-cache", "x-upstream", "age", "x-request-id",
    "server-timing", "vary", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset",
    "ratelimit-policy",
}  # fmt: skip


async def test_it_answers_with_a_hits_headers_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    app = inline_hit("5/minute")
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    with caplog.at_level(logging.INFO, logger="proxy.access"):
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            first = await client.post("/api/chat", content=BODY)
            second = await client.post("/api/chat", content=BODY)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == REPLY
    assert set(second.headers) == HIT_HEADERS
    assert second.headers["x-cache"] == "HIT" and second.headers["vary"] == "Origin"
    assert (first.headers["ratelimit-remaining"], second.headers["ratelimit-remaining"]) == (
        "4", "3")  # fmt: skip
    assert second.headers["ratelimit-policy"] == "5;w=60"
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    lines = [r.getMessage() for r in caplog.records if r.name == "proxy.access"]
    assert len(lines) == 2 and all(" POST /api/chat 200 " in line for line in lines)
