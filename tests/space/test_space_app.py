"""``python app.py`` serving a real tiny Llama on 127.0.0.1: the API the gateway expects,
called through ``gradio_client``, raw HTTP and the gateway itself, streaming included."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from openai import OpenAI

from proxy.core.prompts import Message, render_chat
from tests.e2e.conftest import audited_client, gateway_server
from tests.space.conftest import SPACE_ENV, SpaceProcess, TinyModels
from tests.support.audit import AUDIT
from tests.support.servers import wait_until

import llama

pytestmark = pytest.mark.space

PARAMETERS = ["inputs", "model", "max_new_tokens", "temperature", "top_p", "do_sample"]
SYSTEM = SPACE_ENV["SYSTEM_PROMPT"]


@pytest.fixture(scope="module")
def client(space: SpaceProcess) -> Client:
    return Client(space.url + "/", verbose=False)


@pytest.fixture(scope="module")
def reference(tiny_models: TinyModels) -> llama.Generator:
    """The same tiny model in this process: greedy replies must match the Space's exactly."""
    store = llama.ModelStore(lambda name: str(tiny_models.first))
    return llama.Generator(store, system_prompt=SYSTEM, max_input_tokens=3072, stream_timeout=60)


@pytest.fixture(scope="module")
def gateway(space: SpaceProcess) -> Iterator[str]:
    with gateway_server(upstream_url=space.url, upstream_kind="gradio") as url:
        yield url


def greedy(reference: llama.Generator, inputs: str, tokens: int) -> str:
    return reference.generate(
        inputs, "llama-2-7b-chat", max_new_tokens=tokens, temperature=0, top_p=1, do_sample=False
    )


def test_endpoints_and_parameter_names_are_what_the_gateway_maps(client: Client) -> None:
    api = client.view_api(print_info=False, return_format="dict")
    named = api["named_endpoints"]
    for endpoint in ("/predict", "/predict_stream"):
        assert [p["parameter_name"] for p in named[endpoint]["parameters"]] == PARAMETERS
    choices = named["/predict"]["parameters"][1]["type"]["enum"]
    assert choices == list(llama.AVAILABLE_MODELS)


def test_predict_through_gradio_client(client: Client, reference: llama.Generator) -> None:
    result = client.predict(
        "How much water?", "llama-2-7b-chat", 16, 0.0, 0.95, True, api_name="/predict"
    )
    assert result == {"generated_text": greedy(reference, "How much water?", 16)}


def test_stream_through_gradio_client(client: Client, reference: llama.Generator) -> None:
    job = client.submit(
        "Sleep tips?", "llama-2-7b-chat", 24, 0.7, 0.95, False, api_name="/predict_stream"
    )
    parts = list(job)
    assert len(parts) > 3
    assert all(later.startswith(earlier) for earlier, later in zip(parts, parts[1:], strict=False))
    assert job.result() == greedy(reference, "Sleep tips?", 24)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["   ", "llama-2-7b-chat", 8, 0.7, 0.9, True], "inputs is empty"),
        (["x" * 2001, "llama-2-7b-chat", 8, 0.7, 0.9, True], "the limit is 2000"),
        # Gradio's own components check choices and slider ranges first; their messages say so.
        (["hi", "gpt-4", 8, 0.7, 0.9, True], "gpt-4 is not in the list of choices"),
        (["hi", "llama-2-7b-chat", 5000, 0.7, 0.9, True], "greater than maximum value 1024"),
    ],
)
def test_bad_input_gets_a_message_that_says_what_to_fix(
    client: Client, args: list[Any], message: str
) -> None:
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/predict")


def call(space: SpaceProcess, endpoint: str, data: list[Any]) -> tuple[int, list[tuple[str, Any]]]:
    """Gradio's two-step HTTP API: (status of the POST, the result events)."""
    with httpx.Client(base_url=space.url, timeout=60) as http:
        posted = http.post(f"/gradio_api/call/{endpoint}", json={"data": data})
        if posted.status_code != 200:
            return posted.status_code, [("rejected", posted.json())]
        event_id = posted.json()["event_id"]
        body = http.get(f"/gradio_api/call/{endpoint}/{event_id}").text
    events = []
    for block in body.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], orjson.loads(fields["data"])))
    return 200, events


def test_overload_gives_a_clean_queue_full_then_recovers(space: SpaceProcess) -> None:
    long = ["busy", "llama-2-7b-chat", 1024, 0, 1, False]
    outcomes: list[tuple[int, Any]] = []
    lock = threading.Lock()

    def submit() -> None:
        status, events = call(space, "predict", long)
        with lock:
            outcomes.append((status, events[-1]))

    # One running plus QUEUE_MAX_SIZE=2 waiting; the rest are turned away at once.
    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    wait_until(lambda: any(s == 503 for s, _ in outcomes), timeout=30, what="a full queue")
    # Meanwhile, through a gateway that does not retry (retries would race the queue
    # draining, and could turn this into a success): a 503 the browser can act on.
    with (
        gateway_server(upstream_url=space.url, upstream_kind="gradio", upstream_retries=0) as url,
        audited_client(url) as http,
    ):
        busy = http.post("/api/chat", json={"inputs": "are you there?"})
    assert busy.status_code == 503
    assert busy.json()["code"] == "upstream_busy" and "retry-after" in busy.headers
    for thread in threads:
        thread.join(120)
    rejected = [event for status, event in outcomes if status == 503]
    served = [event for status, event in outcomes if status == 200]
    assert rejected and served
    assert all("Queue is full" in event[1]["detail"] for event in rejected)
    assert all(event[0] == "complete" for event in served)
    status, events = call(space, "predict", ["again", "llama-2-7b-chat", 4, 0, 1, False])
    assert status == 200 and events[-1][0] == "complete"


def test_a_client_that_leaves_stops_generation(space: SpaceProcess) -> None:
    before = space.log().count("stream stopped early")
    with httpx.Client(base_url=space.url, timeout=60) as http:
        posted = http.post(
            "/gradio_api/call/predict_stream",
            json={"data": ["leave", "llama-2-7b-chat", 1024, 0, 1, False]},
        )
        event_id = posted.json()["event_id"]
        with http.stream("GET", f"/gradio_api/call/predict_stream/{event_id}") as response:
            lines = response.iter_lines()
            wait_until(
                lambda: next(lines).startswith("event: generating"),
                timeout=30,
                what="the first token",
            )
        # Leaving the block closes the connection mid-stream.
    wait_until(
        lambda: space.log().count("stream stopped early") > before,
        timeout=30,
        what="the Space to stop generating",
    )


MESSAGES = [
    {"role": "user", "content": "I slept badly."},
    {"role": "assistant", "content": "Sorry to hear that."},
    {"role": "user", "content": "What helps?"},
]


def templated() -> str:
    return render_chat([Message(**m) for m in MESSAGES], default_system=SYSTEM)  # type: ignore[arg-type]


def test_gateway_reply_is_the_spaces_reply(gateway: str, reference: llama.Generator) -> None:
    with audited_client(gateway) as http:
        response = http.post(
            "/api/chat",
            json={
                "messages": [{"role": "system", "content": SYSTEM}, *MESSAGES],
                "parameters": {"max_new_tokens": 20, "do_sample": False},
            },
        )
        ready = http.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["generated_text"] == greedy(reference, templated(), 20).strip()
    assert ready.status_code == 200, ready.text
    assert ready.json()["detail"].startswith("gradio endpoint /predict at")


def test_gateway_streams_the_spaces_tokens(gateway: str, reference: llama.Generator) -> None:
    body = {
        "messages": [{"role": "system", "content": SYSTEM}, *MESSAGES],
        "parameters": {"max_new_tokens": 20, "do_sample": False},
        "stream": True,
    }
    events = []
    with httpx.stream("POST", f"{gateway}/api/chat", json=body, timeout=60) as response:
        assert response.status_code == 200
        text = response.read().decode()
    AUDIT.add(text)
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], orjson.loads(fields["data"])))
    tokens = [data["text"] for name, data in events if name == "token"]
    assert len(tokens) > 3
    assert events[-1][0] == "done"
    expected = greedy(reference, templated(), 20)
    assert "".join(tokens) == expected == events[-1][1]["generated_text"]


def test_openai_client_through_the_gateway_to_the_space(
    gateway: str, reference: llama.Generator
) -> None:
    openai = OpenAI(base_url=f"{gateway}/v1", api_key="unused")
    stream = openai.chat.completions.create(
        model="llama-2-7b-chat",
        messages=[{"role": "system", "content": SYSTEM}, *MESSAGES],  # type: ignore[list-item]
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    content = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert content == greedy(reference, templated(), 16)


def test_the_spaces_error_message_reaches_the_gateways_client(gateway: str) -> None:
    with audited_client(gateway) as http:
        response = http.post("/api/chat", json={"inputs": "y" * 2500})
    assert response.status_code == 502
    body = response.json()
    assert body["code"] == "upstream_error"
    assert "the limit is 2000" in body["error"]
