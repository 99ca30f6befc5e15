"""What /api/chat answers with: an explicit ``stream`` wins; otherwise the Accept header's
preference by q-values, and JSON when it states none. Test mode within every token budget."""

from __future__ import annotations

import httpx
import pytest

from proxy.upstreams.mock_replies import DISCLAIMER, EMERGENCY_GUIDANCE
from tests.conftest import gateway_client

SSE, JSON = "text/event-stream", "application/json"


@pytest.mark.parametrize(
    ("accept", "stream", "expected"),
    [
        (None, None, JSON),
        ("*/*", None, JSON),
        (SSE, None, SSE),
        (JSON, None, JSON),
        (f"{SSE};q=0, {JSON}", None, JSON),
        (f"{JSON}, {SSE}", None, JSON),  # a tie: JSON
        (f"{SSE}, {JSON};q=0.5", None, SSE),
        (f"{JSON};q=0.2, {SSE};q=0.9", None, SSE),
        (f"{SSE};q=0.5, */*;q=0.1", None, SSE),
        (f"{SSE};q=abc", None, JSON),
        (SSE, False, JSON),  # the body wins
        (JSON, True, SSE),
        (None, True, SSE),
    ],
)
async def test_the_media_type_follows_stream_then_accept(
    accept: str | None, stream: bool | None, expected: str
) -> None:
    body: dict[str, object] = {"inputs": "Tips for sleep?"}
    if stream is not None:
        body["stream"] = stream
    headers = {"Accept": accept} if accept is not None else {}
    async with gateway_client() as client:
        response = await client.post("/api/chat", json=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(expected)


@pytest.mark.parametrize("route", ["/api/chat", "/v1/chat/completions"])
async def test_test_mode_keeps_to_every_token_budget(route: str) -> None:
    async with gateway_client(rate_limit="off") as client:
        for budget in range(1, 65):
            response = await ask(client, route, "How can I sleep better?", budget)
            text, usage = response
            assert usage["completion_tokens"] <= budget, (budget, text)
            start = text.removesuffix("…")
            assert "Most adults need".startswith(start[:16]) and start, text  # topical first
            if budget >= 64:
                assert DISCLAIMER in text


async def ask(
    client: httpx.AsyncClient, route: str, prompt: str, budget: int
) -> tuple[str, dict[str, int]]:
    if route == "/api/chat":
        body = {"inputs": prompt, "parameters": {"max_new_tokens": budget}}
        reply = (await client.post(route, json=body)).json()
        return reply["generated_text"], reply["usage"]
    body = {"model": "llama-2-7b-chat", "max_tokens": budget,
            "messages": [{"role": "user", "content": prompt}]}  # fmt: skip
    reply = (await client.post(route, json=body)).json()
    return reply["choices"][0]["message"]["content"], reply["usage"]


async def test_a_small_budget_keeps_the_emergency_line_when_it_fits() -> None:
    async with gateway_client() as client:
        text, _ = await ask(client, "/api/chat", "I have chest pain and can't breathe", 120)
    assert text.startswith(EMERGENCY_GUIDANCE) and text.endswith(DISCLAIMER)
