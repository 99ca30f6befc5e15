"""The official ``openai`` client, sync and async, streaming and not, against the gateway on
a real uvicorn socket."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from proxy import Settings, create_app
from proxy.upstreams.mock_replies import DISCLAIMER
from tests.support.servers import ThreadServer

pytestmark = pytest.mark.e2e

MESSAGES = [
    {"role": "system", "content": "You are a helpful health assistant."},
    {"role": "user", "content": "How much water should I drink each day?"},
]


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = create_app(Settings(mock_token_delay_ms=1))
    with ThreadServer(app) as server:
        yield f"{server.url}/v1"


@pytest.fixture
def client(base_url: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=base_url, api_key="unused", max_retries=0) as c:
        yield c


def test_models_list(client: OpenAI) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids == ["llama-2-7b-chat", "llama-2-13b-chat", "llama-2-7b", "llama-2-13b"]


def test_completion(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model="llama-2-7b-chat", messages=MESSAGES, max_tokens=300, temperature=0.2
    )
    choice = completion.choices[0]
    assert completion.model == "llama-2-7b-chat"
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert choice.message.content and choice.message.content.endswith(DISCLAIMER)
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 10
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_stream_matches_the_completion(client: OpenAI) -> None:
    whole = client.chat.completions.create(
        model="llama-2-13b-chat", messages=MESSAGES, extra_headers={"Cache-Control": "no-store"}
    )
    stream = client.chat.completions.create(
        model="llama-2-13b-chat",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"Cache-Control": "no-store"},
    )
    chunks = list(stream)
    deltas = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert len(deltas) > 10
    assert "".join(deltas) == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 10


def test_stop_sequence_and_length(client: OpenAI) -> None:
    stopped = client.chat.completions.create(
        model="llama-2-7b-chat", messages=MESSAGES, stop=["\n"]
    )
    assert "\n" not in (stopped.choices[0].message.content or "")
    assert stopped.choices[0].finish_reason == "stop"
    short = client.chat.completions.create(
        model="llama-2-7b-chat", messages=MESSAGES, max_tokens=30
    )
    assert short.choices[0].finish_reason == "length"


@pytest.mark.parametrize("cache", ["no-store", "max-age=3600"])  # from the upstream; replayed
def test_a_streamed_reply_stops_at_a_stop_sequence(client: OpenAI, cache: str) -> None:
    whole = client.chat.completions.create(model="llama-2-7b-chat", messages=MESSAGES)
    text = whole.choices[0].message.content or ""
    words = text.split(" ")
    stop = " ".join(words[5:8])  # three words: the stream sends it over several chunks
    chunks = list(
        client.chat.completions.create(
            model="llama-2-7b-chat",
            messages=MESSAGES,
            stop=[stop],
            stream=True,
            extra_headers={"Cache-Control": cache},
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text[: text.index(stop)]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"model": "gpt-4"}, "unknown_model"),
        ({"n": 2}, "unsupported_n"),
        ({"temperature": 3}, "invalid_parameter"),
        ({"max_tokens": 5000}, "invalid_parameter"),
    ],
)
def test_errors_in_openai_shape(client: OpenAI, kwargs: dict[str, object], code: str) -> None:
    args: dict[str, object] = {"model": "llama-2-7b-chat", "messages": MESSAGES, **kwargs}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**args)  # type: ignore[call-overload]
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    assert error["message"]


async def test_async_client_completion_and_stream(base_url: str) -> None:
    async with AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="llama-2-7b-chat",
            messages=MESSAGES,  # type: ignore[arg-type]
        )
        stream = await client.chat.completions.create(
            model="llama-2-7b-chat",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(parts) == completion.choices[0].message.content


def test_a_model_is_retrieved_and_an_unknown_one_is_a_404(client: OpenAI) -> None:
    model = client.models.retrieve("llama-2-7b-chat")
    by_hub_id = client.models.retrieve("meta-llama/Llama-2-13b-chat-hf")
    assert (model.id, model.object, model.owned_by) == ("llama-2-7b-chat", "model", "meta-llama")
    assert by_hub_id.id == "llama-2-13b-chat"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-4o")
    assert "gpt-4o" in str(caught.value) and "/v1/models" in str(caught.value)
    assert caught.value.code == "model_not_found"


def test_a_developer_message_is_a_system_message(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model="llama-2-7b-chat",
        messages=[
            {"role": "developer", "content": "Answer briefly."},
            {"role": "user", "content": "How much water should I drink?"},
        ],
    )
    assert completion.choices[0].message.content


@pytest.mark.parametrize(
    ("extra", "code", "param"),
    [
        ({"response_format": {"type": "json_object"}}, "unsupported_response_format",
         "response_format"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
         "unsupported_response_format", "response_format"),
        ({"logprobs": True}, "unsupported_logprobs", "logprobs"),
        ({"seed": 7}, "unsupported_seed", "seed"),
        ({"n": 2}, "unsupported_n", "n"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
         "unsupported_tools", "tools"),
    ],
)  # fmt: skip
def test_what_cannot_be_honoured_is_refused_and_says_why(
    client: OpenAI, extra: dict[str, object], code: str, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="llama-2-7b-chat",
            messages=MESSAGES,
            **extra,  # type: ignore[arg-type]
        )
    assert caught.value.code == code
    assert caught.value.param == param


def test_text_format_is_accepted_and_an_image_part_refused(client: OpenAI) -> None:
    plain = client.chat.completions.create(
        model="llama-2-7b-chat", messages=MESSAGES, response_format={"type": "text"}
    )
    assert plain.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="llama-2-7b-chat",
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in this picture?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                }
            ],  # fmt: skip
        )
    assert caught.value.code == "unsupported_content"
    assert caught.value.param == "messages.0.content"
    assert "text only" in str(caught.value)
