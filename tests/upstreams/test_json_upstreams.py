"""The tgi and openai upstream adapters against in-test servers that speak their wire formats,
driven through the gateway's routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tests.conftest import gateway_client
from tests.support.audit import CLIENT_AUTH, TOKEN
from tests.support.fake_llm_servers import FakeOpenAI, FakeServer, FakeTGI
from tests.support.servers import ThreadServer, free_port

KINDS = ["tgi", "openai"]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, tuple[FakeServer, str]]]:
    tgi, oai = FakeTGI(), FakeOpenAI()
    with ThreadServer(tgi.app(), lifespan="off") as a, ThreadServer(oai.app(), lifespan="off") as b:
        yield {"tgi": (tgi, a.url), "openai": (oai, f"{b.url}/v1")}


def settings(kind: str, servers: dict[str, tuple[FakeServer, str]], **extra: Any) -> dict[str, Any]:
    return {
        "upstream_kind": kind,
        "upstream_url": servers[kind][1],
        "hf_token": TOKEN,
        "cache_enabled": False,
        **extra,
    }


def events(text: str) -> list[tuple[str, Any]]:
    found = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        found.append((lines["event"], orjson.loads(lines["data"])))
    return found


@pytest.mark.parametrize("kind", KINDS)
async def test_generate_and_stream_agree(
    kind: str, servers: dict[str, tuple[FakeServer, str]]
) -> None:
    body = {"messages": [{"role": "user", "content": "Why do I get headaches?"}]}
    async with gateway_client(**settings(kind, servers)) as client:
        plain = await client.post("/api/chat", json=body)
        streamed = await client.post("/api/chat", json={**body, "stream": True})
    assert plain.status_code == 200, plain.text
    assert plain.headers["x-upstream"] == kind
    text = plain.json()["generated_text"]
    assert text.startswith("Echo:") and "headaches?" in text
    found = events(streamed.text)
    tokens = [data["text"] for name, data in found if name == "token"]
    assert len(tokens) > 2
    assert "".join(tokens) == text
    name, done = found[-1]
    assert name == "done" and done.pop("usage")["completion_tokens"] > 0
    served = "meta-llama/Llama-2-7b-chat-hf" if kind == "openai" else "llama-2-7b-chat"
    assert plain.json()["model"] == served  # what the server said it served
    assert done == {
        "generated_text": text,
        "model": served,
        "finish_reason": "stop",
        "upstream": kind,
    }
    assert "</s>" not in streamed.text


@pytest.mark.parametrize("kind", KINDS)
async def test_token_is_sent_as_bearer_and_browser_auth_never(
    kind: str, servers: dict[str, tuple[FakeServer, str]]
) -> None:
    server = servers[kind][0]
    before = len(server.requests)
    async with gateway_client(**settings(kind, servers)) as client:
        await client.post(
            "/api/chat", json={"inputs": "hello"}, headers={"Authorization": CLIENT_AUTH}
        )
    _, headers, _ = server.requests[before]
    assert headers["authorization"] == f"Bearer {TOKEN}"


async def test_tgi_parameters(servers: dict[str, tuple[FakeServer, str]]) -> None:
    server = servers["tgi"][0]
    async with gateway_client(**settings("tgi", servers)) as client:
        await client.post("/api/chat", json={"inputs": "hi", "parameters": {"temperature": 0}})
        await client.post(
            "/api/chat",
            json={
                "inputs": "hi",
                "parameters": {"temperature": 0.5, "top_p": 0.9, "max_new_tokens": 3},
            },
        )
    greedy, sampled = (r[2]["parameters"] for r in server.requests[-2:])
    assert greedy["do_sample"] is False
    assert "temperature" not in greedy and "top_p" not in greedy
    assert sampled == {
        "max_new_tokens": 3,
        "do_sample": True,
        "temperature": 0.5,
        "top_p": 0.9,
        "return_full_text": False,
        "details": True,
    }
    assert server.requests[-1][2]["inputs"].startswith("<s>[INST] <<SYS>>")


async def test_tgi_length_finish_and_usage_through_the_openai_route(
    servers: dict[str, tuple[FakeServer, str]],
) -> None:
    async with gateway_client(**settings("tgi", servers)) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={
                "model": "llama-2-7b-chat",
                "max_tokens": 2,
                "messages": [{"role": "user", "content": "one two three four"}],
            },
        )
    data = response.json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 2


async def test_openai_upstream_gets_messages_and_mapped_model(
    servers: dict[str, tuple[FakeServer, str]],
) -> None:
    server = servers["openai"][0]
    extra = {"upstream_model_map": "llama-2-7b-chat=llama2-7b-local"}
    async with gateway_client(**settings("openai", servers, **extra)) as client:
        chat = await client.post(
            "/api/chat", json={"inputs": "hi", "parameters": {"temperature": 0}}
        )
        base = await client.post(
            "/api/chat", json={"inputs": "The heart is", "model": "llama-2-7b"}
        )
        usage = await client.post(
            "/v1/chat/completions",
            json={"model": "llama-2-7b-chat", "messages": [{"role": "user", "content": "x"}]},
        )
    assert chat.status_code == base.status_code == 200
    (chat_path, _, chat_body), (base_path, _, base_body), _ = server.requests[-3:]
    assert chat_path == "/v1/chat/completions"
    assert chat_body["model"] == "llama2-7b-local"
    assert chat_body["messages"][0]["role"] == "system"
    assert chat_body["messages"][1] == {"role": "user", "content": "hi"}
    assert chat_body["temperature"] == 0.0
    assert base_path == "/v1/completions"
    assert base_body["model"] == "meta-llama/Llama-2-7b-hf"
    assert base_body["prompt"] == "The heart is"
    assert usage.json()["usage"]["prompt_tokens"] == 11  # reported, not estimated


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("word", "status", "code", "text"),
    [
        ("VALIDATION", 400, "prompt_too_long", "4096"),
        ("REFUSED", 422, "upstream_rejected", "temperature"),
        ("OVERLOADED", 429, "upstream_rate_limited", "retry later"),
        # TGI's 424 is the generation failing; a 500 is the server's, retried, then a 502.
        ("GENERROR", 502, {"tgi": "upstream_error", "openai": "upstream_server_error"}, "rror"),
    ],
)
async def test_error_bodies_become_specific_errors(
    kind: str,
    word: str,
    status: int,
    code: str | dict[str, str],
    text: str,
    servers: dict[str, tuple[FakeServer, str]],
) -> None:
    async with gateway_client(**settings(kind, servers)) as client:
        response = await client.post("/api/chat", json={"inputs": f"please {word}"})
    expected = code[kind] if isinstance(code, dict) else code
    assert (response.status_code, response.json()["code"]) == (status, expected)
    assert text in response.json()["error"]
    assert TOKEN not in response.text


@pytest.mark.parametrize("kind", KINDS)
async def test_error_mid_stream_is_an_error_event(
    kind: str, servers: dict[str, tuple[FakeServer, str]]
) -> None:
    async with gateway_client(**settings(kind, servers)) as client:
        response = await client.post(
            "/api/chat", json={"inputs": "STREAMERROR now", "stream": True}
        )
    found = events(response.text)
    assert found[0][0] == "token"
    assert found[-1][0] == "error"
    assert found[-1][1]["code"] == "upstream_error"


@pytest.mark.parametrize("kind", KINDS)
async def test_readiness(kind: str, servers: dict[str, tuple[FakeServer, str]]) -> None:
    async with gateway_client(**settings(kind, servers)) as client:
        assert (await client.get("/readyz")).status_code == 200
    down = {**settings(kind, servers), "upstream_url": f"http://127.0.0.1:{free_port()}"}
    async with gateway_client(**down) as client:
        response = await client.get("/readyz")
        failed = await client.post("/api/chat", json={"inputs": "hi"})
    assert (response.status_code, response.json()["code"]) == (503, "upstream_unreachable")
    assert (failed.status_code, failed.json()["code"]) == (502, "upstream_unreachable")
