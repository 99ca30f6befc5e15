"""Every answer under /v1/ is an error in OpenAI's shape, whichever layer refused it (the
router, the guard, the body, the upstream); every other path keeps the gateway's shape."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import gateway_client
from tests.support.audit import API_KEY

CHAT = {"model": "llama-2-7b-chat", "messages": [{"role": "user", "content": "hi"}]}


def openai_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]  # type: ignore[no-any-return]


async def test_the_routers_own_404_and_405_under_v1() -> None:
    async with gateway_client() as client:
        missing = await client.get("/v1/embeddings")
        wrong = await client.get("/v1/chat/completions")
        ours = await client.get("/api/nothing")
    assert missing.status_code == 404
    assert openai_error(missing)["code"] == "not_found"
    assert openai_error(missing)["type"] == "invalid_request_error"
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert openai_error(wrong)["code"] == "method_not_allowed"
    assert ours.json()["code"] == "not_found" and isinstance(ours.json()["error"], str)


async def test_the_guards_refusals_under_v1() -> None:
    async with gateway_client(api_keys=API_KEY, rate_limit="1/minute") as client:
        missing_key = await client.post("/v1/chat/completions", json=CHAT)
        auth = {"Authorization": f"Bearer {API_KEY}"}
        first = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
        limited = await client.post("/v1/chat/completions", json=CHAT, headers=auth)
        seed_route = await client.post("/api/chat", json={"inputs": "hi"})
    assert missing_key.status_code == 401
    assert openai_error(missing_key) | {"message": ""} == {
        "message": "", "type": "authentication_error", "param": None, "code": "missing_api_key",
    }  # fmt: skip
    assert missing_key.headers["www-authenticate"].startswith("Bearer")
    assert first.status_code == 200
    assert limited.status_code == 429 and limited.headers["retry-after"]
    assert openai_error(limited)["type"] == "rate_limit_error"
    assert openai_error(limited)["code"] == "rate_limited"
    assert seed_route.json()["code"] == "missing_api_key"  # the gateway's shape off /v1/


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({**CHAT, "temperature": 3}, "temperature", "invalid_parameter"),
        ({**CHAT, "top_p": 0}, "top_p", "invalid_parameter"),
        ({"model": "llama-2-7b-chat"}, "messages", "invalid_request"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role",
         "invalid_request"),
    ],
)  # fmt: skip
async def test_a_body_error_names_its_field_as_param(
    body: dict[str, Any], param: str, code: str
) -> None:
    async with gateway_client() as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = openai_error(response)
    assert (error["param"], error["code"]) == (param, code)


async def test_a_budget_out_of_range_reads_as_one_sentence() -> None:
    async with gateway_client() as client:
        response = await client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 0})
    assert openai_error(response)["message"] == (
        "max_tokens must be an integer from 1 to 1024; got 0"
    )


async def test_the_seed_route_names_no_param_but_keeps_its_shape() -> None:
    async with gateway_client() as client:
        response = await client.post(
            "/api/chat", json={"inputs": "x", "parameters": {"temperature": 9}}
        )
    assert response.status_code == 422
    assert set(response.json()) == {"error", "code", "request_id"}
