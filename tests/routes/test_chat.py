"""POST /api/chat and /api/predict: shapes that work, and every bad input's exact error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import gateway_client
from tests.support.spy import SpyUpstream


async def post(client: httpx.AsyncClient, body: Any, **kw: Any) -> httpx.Response:
    return await client.post("/api/chat", json=body, **kw)


@pytest.mark.parametrize("path", ["/api/chat", "/api/predict"])
async def test_seed_body_gets_generated_text_and_model(
    mock_client: httpx.AsyncClient, path: str
) -> None:
    body = {
        "inputs": "How much water should I drink?",
        "parameters": {
            "model": "llama-2-13b-chat",
            "max_new_tokens": 300,
            "temperature": 0.7,
            "top_p": 0.95,
            "do_sample": True,
        },
    }
    response = await mock_client.post(path, json=body)
    assert response.status_code == 200
    data = response.json()
    assert set(data) == {"generated_text", "model", "usage"}
    assert set(data["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens",
                                  "estimated"}  # fmt: skip
    assert data["model"] == "llama-2-13b-chat"
    assert "urine is pale yellow" in data["generated_text"] or "litres" in data["generated_text"]
    assert response.headers["x-upstream"] == "mock"
    assert response.headers["x-cache"] == "MISS"
    assert response.headers["content-type"] == "application/json"


async def test_messages_body_and_top_level_model(mock_client: httpx.AsyncClient) -> None:
    body = {
        "model": "meta-llama/Llama-2-7b-chat-hf",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Any tips for stress?"},
        ],
    }
    response = await post(mock_client, body)
    assert response.status_code == 200
    assert response.json()["model"] == "llama-2-7b-chat"
    assert "breath" in response.json()["generated_text"].lower() or "stress" in response.text


async def test_default_model_when_none_given(mock_client: httpx.AsyncClient) -> None:
    response = await post(mock_client, {"inputs": "hello"})
    assert response.json()["model"] == "llama-2-7b-chat"


async def test_temperature_zero_is_accepted_as_greedy(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = SpyUpstream()
    monkeypatch.setattr("proxy.app.build_upstream", lambda settings: spy)
    async with gateway_client() as client:
        greedy = await post(client, {"inputs": "sleep", "parameters": {"temperature": 0}})
        # Greedy decoding ignores top_p and temperature: the same reply, from the cache.
        same = await post(
            client, {"inputs": "sleep", "parameters": {"top_p": 0.3, "temperature": 0}}
        )
    assert greedy.status_code == 200 and greedy.json()["generated_text"]
    [sent] = spy.requests
    assert (sent.do_sample, sent.temperature) == (False, 0.0)
    assert same.headers["x-cache"] == "HIT"


BAD_BODIES = [
    # (body, status, code, words the message must contain)
    (
        {"inputs": "x", "parameters": {"max_new_tokens": 0}},
        422,
        "invalid_parameter",
        ["parameters.max_new_tokens", "1 to 1024"],
    ),
    (
        {"inputs": "x", "parameters": {"max_new_tokens": 5000}},
        422,
        "invalid_parameter",
        ["parameters.max_new_tokens", "1 to 1024"],
    ),
    (
        {"inputs": "x", "parameters": {"temperature": -0.1}},
        422,
        "invalid_parameter",
        ["parameters.temperature", "0 to 2"],
    ),
    (
        {"inputs": "x", "parameters": {"temperature": 2.5}},
        422,
        "invalid_parameter",
        ["parameters.temperature", "0 to 2"],
    ),
    (
        {"inputs": "x", "parameters": {"top_p": 0}},
        422,
        "invalid_parameter",
        ["parameters.top_p", "greater than 0"],
    ),
    (
        {"inputs": "x", "parameters": {"top_p": 1.5}},
        422,
        "invalid_parameter",
        ["parameters.top_p", "at most 1"],
    ),
    ({"inputs": ""}, 422, "empty_prompt", ["empty"]),
    ({"inputs": "   \n"}, 422, "empty_prompt", ["empty"]),
    ({"messages": [{"role": "system", "content": "hi"}]}, 422, "empty_prompt", ["user"]),
    ({"messages": []}, 400, "invalid_request", ["messages"]),
    ({"parameters": {"max_new_tokens": 10}}, 400, "missing_prompt", ["inputs", "messages"]),
    (
        {"inputs": "a", "messages": [{"role": "user", "content": "b"}]},
        400,
        "invalid_request",
        ["either inputs or messages"],
    ),
    (
        {"inputs": "x", "parameters": {"model": "gpt-4"}},
        400,
        "unknown_model",
        ["gpt-4", "llama-2-7b-chat", "llama-2-13b-chat", "llama-2-7b", "llama-2-13b"],
    ),
    (
        {"inputs": "x", "model": "llama-2-7b", "parameters": {"model": "llama-2-13b"}},
        400,
        "conflicting_model",
        ["model"],
    ),
    ({"inputs": 42}, 400, "invalid_request", ["inputs"]),
    (
        {"inputs": "x", "parameters": {"max_new_tokens": "100"}},
        400,
        "invalid_request",
        ["parameters.max_new_tokens"],
    ),
    (
        {"inputs": "x", "parameters": {"do_sample": "yes"}},
        400,
        "invalid_request",
        ["parameters.do_sample"],
    ),
    (
        {"messages": [{"role": "doctor", "content": "x"}]},
        400,
        "invalid_request",
        ["messages.0.role"],
    ),
    (
        {"inputs": "x", "parameters": {"typical_p": 0.2}},
        400,
        "unknown_field",
        ["parameters.typical_p", "max_new_tokens", "top_k", "repetition_penalty"],
    ),
    (
        {"inputs": "x", "parameters": {"top_k": 0}},
        422,
        "invalid_parameter",
        ["parameters.top_k", "from 1 to 1000"],
    ),
    (
        {"inputs": "x", "parameters": {"repetition_penalty": 0}},
        422,
        "invalid_parameter",
        ["parameters.repetition_penalty", "greater than 0"],
    ),
    ({"prompt": "x"}, 400, "unknown_field", ["prompt", "inputs"]),
    ([1, 2], 400, "invalid_json", ["JSON object"]),
]


@pytest.mark.parametrize(("body", "status", "code", "words"), BAD_BODIES)
async def test_bad_body_gets_specific_json_error(
    mock_client: httpx.AsyncClient, body: Any, status: int, code: str, words: list[str]
) -> None:
    response = await post(mock_client, body)
    assert response.status_code == status, response.text
    data = response.json()
    assert data["code"] == code
    for word in words:
        assert word in data["error"]
    assert data["request_id"] == response.headers["x-request-id"]


async def test_non_json_body_is_400(mock_client: httpx.AsyncClient) -> None:
    response = await mock_client.post(
        "/api/chat", content=b'{"inputs": "x",', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_json"
    assert "not valid JSON" in response.json()["error"]


@pytest.mark.parametrize(
    "content_type", ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None]
)
async def test_wrong_content_type_is_415(
    mock_client: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await mock_client.post("/api/chat", content=b'{"inputs": "x"}', headers=headers)
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert "application/json" in response.json()["error"]


async def test_body_over_limit_is_413(mock_client: httpx.AsyncClient) -> None:
    response = await post(mock_client, {"inputs": "x" * 70_000})
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert "65536" in response.json()["error"]


async def test_chunked_body_over_limit_is_413_without_content_length(
    mock_client: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"inputs": "'
        for _ in range(80):
            yield b"y" * 1024
        yield b'"}'

    response = await mock_client.post(
        "/api/chat", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413


async def test_prompt_over_limit_is_422() -> None:
    async with gateway_client(max_prompt_chars=100) as client:
        response = await post(client, {"inputs": "a" * 101})
    assert response.status_code == 422
    assert response.json()["code"] == "prompt_too_long"
    assert "100" in response.json()["error"]


async def test_max_new_tokens_ceiling_from_settings() -> None:
    async with gateway_client(max_new_tokens_limit=256) as client:
        too_many = await post(client, {"inputs": "x", "parameters": {"max_new_tokens": 300}})
        fine = await post(client, {"inputs": "x", "parameters": {"max_new_tokens": 256}})
    assert too_many.status_code == 422
    assert "1 to 256" in too_many.json()["error"]
    assert fine.status_code == 200


async def test_wrong_method_is_405_with_allow(mock_client: httpx.AsyncClient) -> None:
    response = await mock_client.get("/api/chat")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["code"] == "method_not_allowed"


async def test_unknown_path_is_404_json(mock_client: httpx.AsyncClient) -> None:
    response = await mock_client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert "/api/nothing-here" in response.json()["error"]


async def test_request_id_is_echoed_when_valid(mock_client: httpx.AsyncClient) -> None:
    mine = await mock_client.get("/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert mine.headers["x-request-id"] == "trace-abc.123"
    bad = await mock_client.get("/healthz", headers={"X-Request-ID": "no spaces <allowed>"})
    assert bad.headers["x-request-id"] != "no spaces <allowed>"
    ids = {(await mock_client.get("/healthz")).headers["x-request-id"] for _ in range(50)}
    assert len(ids) == 50
    assert all(len(i) >= 16 and i.isalnum() for i in ids)
