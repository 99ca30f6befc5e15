"""The gateway against real Gradio apps in the shapes of public Llama 2 chat Spaces
(space_shapes.py): each test reads back what the app received, not only the reply."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from proxy.core.generation import CHARS_PER_TOKEN
from proxy.core.prompts import HEALTH_SYSTEM_PROMPT
from tests.conftest import gateway_client
from tests.e2e.conftest import GradioServer, gateway_server
from tests.e2e.space_shapes import ANSWER, LONG_ANSWER
from tests.e2e.test_router import gradio, routed, sse, streamed_text
from tests.support.fake_llm_servers import ANSWER as GRADIO_ANSWER
from tests.support.fault_space import FaultSpace
from tests.support.processes import ROOT, clean_env
from tests.support.servers import wait_until

pytestmark = pytest.mark.e2e

MODEL = "llama-2-7b-chat"
CONVERSATION = [
    {"role": "system", "content": "Answer in one line."},
    {"role": "user", "content": "I wake at 3am."},
    {"role": "assistant", "content": "That is common."},
    {"role": "user", "content": "What helps me fall back asleep?"},
]
# The earlier turns, as the gateway writes them for an app with no history parameter.
WRITTEN_HISTORY = (
    "The conversation so far:\nUser: I wake at 3am.\nAssistant: That is common.\n\n"
    "User: What helps me fall back asleep?"
)


def received(server: GradioServer, app: str, since: int) -> list[dict[str, Any]]:
    return [e for e in server.received()[since:] if e["app"] == app]


async def ask(server: GradioServer, app: str, body: dict[str, Any], **settings: Any):  # type: ignore[no-untyped-def]
    values = {"upstream_url": f"{server.url}/{app}", "cache_enabled": False, "rate_limit": "off"}
    async with gateway_client(**{**values, **settings}) as client:
        return await client.post("/api/chat", json=body)


async def test_a_chat_interface_gets_plain_text_its_system_prompt_and_every_parameter(
    space_shapes: GradioServer,
) -> None:
    since = len(space_shapes.received())
    parameters = {
        "max_new_tokens": 7,
        "temperature": 0.3,
        "top_p": 0.8,
        "top_k": 20,
        "repetition_penalty": 1.3,
    }
    response = await ask(
        space_shapes, "official", {"messages": CONVERSATION, "parameters": parameters}
    )
    assert response.status_code == 200, response.text
    assert response.json()["generated_text"] == " ".join(ANSWER.split()[:7])
    # Everything the endpoint takes arrived; do_sample is the one field it has no place for.
    assert response.headers["x-upstream-ignored"] == "do_sample"
    (call,) = received(space_shapes, "official", since)
    assert call["message"] == WRITTEN_HISTORY  # no template: the app applies its own
    assert "[INST]" not in call["message"] and "<<SYS>>" not in call["message"]
    assert call["system"] == "Answer in one line."
    assert call["params"] == parameters
    assert call["history"] == []  # a ChatInterface takes no history over the API


async def test_without_a_system_message_the_app_gets_the_gateways_and_values_are_clamped(
    space_shapes: GradioServer,
) -> None:
    since = len(space_shapes.received())
    body = {
        "inputs": "How do I sleep better?",
        "parameters": {"max_new_tokens": 3, "temperature": 0.05, "repetition_penalty": 3.0},
    }
    response = await ask(space_shapes, "official", body)
    assert response.status_code == 200, response.text
    (call,) = received(space_shapes, "official", since)
    assert call["message"] == "How do I sleep better?"
    assert call["system"] == HEALTH_SYSTEM_PROMPT
    # The app's sliders: temperature from 0.1, repetition penalty up to 2; its own top_k.
    assert call["params"] == {
        "max_new_tokens": 3,
        "temperature": 0.1,
        "top_p": 0.95,
        "top_k": 50,
        "repetition_penalty": 2.0,
    }


def _ask_twice(client: openai.OpenAI) -> tuple[Any, list[Any]]:
    """One whole completion and one stream, each with max_tokens=6."""
    whole = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=6
    )
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Hi again"}],
            max_tokens=6,
            stream=True,
            extra_body={"top_k": 5},
        )
    )
    return whole, chunks


async def test_a_bare_chat_interface_is_held_to_the_budget_and_stopped(
    space_shapes: GradioServer,
) -> None:
    """``max_tokens`` on /v1 through the official client, streamed and not: the answer ends
    at the budget with finish_reason length and honest usage, and the app stops."""
    since = len(space_shapes.received())
    with gateway_server(
        upstream_url=f"{space_shapes.url}/bare", cache_enabled=False, rate_limit="off"
    ) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with client:
            whole, chunks = _ask_twice(client)
    choice = whole.choices[0]
    assert choice.finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens <= 6
    assert 0 < len(choice.message.content or "") <= 6 * CHARS_PER_TOKEN
    assert LONG_ANSWER.startswith(choice.message.content or "")
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and streamed == choice.message.content
    # The app was stopped where the gateway cut, not run to its 50 words.
    wait_until(
        lambda: len([e for e in received(space_shapes, "bare", since) if "event" in e]) == 2,
        timeout=10,
        what="the bare app's generations to be stopped",
    )
    for stop in (e for e in received(space_shapes, "bare", since) if "event" in e):
        assert stop["yielded"] < len(LONG_ANSWER.split())
    calls = [e for e in received(space_shapes, "bare", since) if "message" in e]
    # No system parameter: the gateway's system prompt is written before the message.
    assert calls[0]["message"] == f"{HEALTH_SYSTEM_PROMPT}\n\nHi"


async def test_a_text_generation_interface_does_not_echo_the_prompt(
    space_shapes: GradioServer,
) -> None:
    since = len(space_shapes.received())
    for stream in (False, True):
        response = await ask(
            space_shapes, "pipeline", {"inputs": "How do I sleep better?", "stream": stream}
        )
        assert response.status_code == 200, response.text
        text = streamed_text(sse(response.text)) if stream else response.json()["generated_text"]
        assert text == "Sleep seven to nine hours."
        assert HEALTH_SYSTEM_PROMPT not in response.text and "[INST]" not in response.text
    calls = received(space_shapes, "pipeline", since)
    # A raw-prompt endpoint keeps the gateway's Llama 2 template.
    assert [c["message"].startswith("<s>[INST] <<SYS>>") for c in calls] == [True, True]


@pytest.mark.parametrize("api_name", [None, "/user"])
async def test_a_blocks_chat_is_driven_as_its_page_drives_it(
    space_shapes: GradioServer, api_name: str | None
) -> None:
    """``user`` then ``.then(bot)`` in one session: the message and history to the first,
    the state it wrote read by the second, the answer from the second's Chatbot."""
    since = len(space_shapes.received())
    response = await ask(
        space_shapes,
        "blocks",
        {"messages": CONVERSATION, "stream": True},
        space_api_name=api_name,
    )
    assert response.status_code == 200, response.text
    answer = "On 'What helps me fall back asleep?': rest and drink water."
    assert streamed_text(sse(response.text)) == answer
    user, bot = received(space_shapes, "blocks", since)
    assert user["step"] == "user" and bot["step"] == "bot"
    assert user["message"] == "Answer in one line.\n\nWhat helps me fall back asleep?"
    assert [(m["role"], m["content"][0]["text"]) for m in user["history"]] == [
        ("user", "I wake at 3am."),
        ("assistant", "That is common."),
    ]
    assert bot["state"] == user["message"]  # kept by the Space between the two events
    assert bot["turns"] == 3


async def test_an_app_without_a_public_api_says_so(space_shapes: GradioServer) -> None:
    response = await ask(space_shapes, "private", {"inputs": "Hi"})
    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "upstream_no_api"
    assert "no public API" in body["error"] and "api_name" in body["error"]


@pytest.mark.parametrize(
    ("word", "status", "code", "retry_after"),
    [
        ("quota", 429, "upstream_quota", "322"),
        ("limit", 429, "upstream_quota", "60"),
        ("runs", 429, "upstream_quota", "60"),
        ("nogpu", 503, "upstream_busy", "30"),
        ("queued", 503, "upstream_busy", "30"),
        ("duration", 422, "upstream_rejected", None),
    ],
)
async def test_zerogpu_errors_are_classified_by_title_and_message(
    space_shapes: GradioServer, word: str, status: int, code: str, retry_after: str | None
) -> None:
    response = await ask(space_shapes, "zerogpu", {"inputs": f"{word} please"})
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert response.headers.get("retry-after") == retry_after


async def test_a_space_out_of_zerogpu_quota_is_skipped_until_its_wait_is_over(
    space_shapes: GradioServer, tmp_path: Path
) -> None:
    since = len(space_shapes.received())
    tables = [
        gradio("zero", f"{space_shapes.url}/zerogpu", priority=0),
        gradio("spare", f"{space_shapes.url}/official", priority=1),
    ]
    async with routed(tmp_path, tables) as client:
        first = await client.post("/api/chat", json={"inputs": "quota sleep?"})
        second = await client.post("/api/chat", json={"inputs": "quota again?"})
        ready = (await client.get("/readyz")).json()
    assert (first.status_code, first.headers["x-upstream"]) == (200, "spare")
    assert (second.status_code, second.headers["x-upstream"]) == (200, "spare")
    assert len(received(space_shapes, "zerogpu", since)) == 1  # asked once, then skipped
    assert ready["upstreams"]["zero"] == "cooling"


def inspect(url: str) -> str:
    """``python -m proxy inspect url``'s report (a process of its own, as a user runs it)."""
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "inspect", url],
        env=clean_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_inspect_names_the_kind_and_where_each_field_goes(space_shapes: GradioServer) -> None:
    report = inspect(f"{space_shapes.url}/bare")
    assert "kind: chat: a ChatInterface" in report
    assert "message <- the last user message, plain text" in report
    assert "the system prompt and earlier turns written before it in plain words" in report
    assert "max_new_tokens: not taken; the gateway stops the answer there itself" in report
    blocks = inspect(f"{space_shapes.url}/blocks")
    assert "kind: chat: a Blocks chat: its answer comes from /bot" in blocks
    assert re.search(r"1\. history \[[^]]*\] <- the earlier turns", blocks)


def test_a_readiness_probe_shows_the_chat_endpoint(space_shapes: GradioServer) -> None:
    with gateway_server(upstream_url=f"{space_shapes.url}/bare") as url:
        ready = httpx.get(f"{url}/readyz", timeout=10).json()
    # gradio 6 names a ChatInterface's endpoint after its function: /predict here.
    assert ready["detail"].startswith("gradio endpoint /predict")


async def test_a_chat_space_cannot_continue_a_broken_answer_so_the_next_one_does(
    tmp_path: Path,
    space_shapes: GradioServer,
    gradio_server: GradioServer,
    fault_space: FaultSpace,
) -> None:
    """A chat endpoint applies its own template: it is passed over for a continuation,
    without being held against it, and a raw-prompt Space finishes the answer."""
    tables = [
        gradio("broken", f"{fault_space.url}/cutmid"),
        gradio("chat", f"{space_shapes.url}/official", priority=1),
        gradio("raw", f"{gradio_server.url}/c", priority=2),
    ]
    since = len(space_shapes.received())
    async with routed(tmp_path, tables) as client:
        response = await client.post("/api/chat", json={"inputs": "Help?", "stream": True})
        ready = (await client.get("/readyz")).json()
    found = sse(response.text)
    assert streamed_text(found) == GRADIO_ANSWER
    assert found[-1][1]["upstream"] == "broken, raw"
    assert received(space_shapes, "official", since) == []  # never asked to continue
    assert ready["upstreams"]["chat"] == "ready"
