"""The gateway on a real socket in front of real Gradio apps: both Space shapes of the seed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from proxy.core.prompts import HEALTH_SYSTEM_PROMPT
from tests.e2e.conftest import GradioServer, audited_client, gateway_server
from tests.support.audit import AUDIT, CLIENT_AUTH, TOKEN
from tests.support.servers import TcpRelay, free_port, wait_until

pytestmark = pytest.mark.e2e

TEMPLATED = f"<s>[INST] <<SYS>>\n{HEALTH_SYSTEM_PROMPT}\n<</SYS>>\n\nHow do I sleep better? [/INST]"


def test_seed_app_as_written_with_nothing_but_the_url(gradio_server: GradioServer) -> None:
    with gateway_server(upstream_url=f"{gradio_server.url}/seed") as url, audited_client(url) as c:
        assert c.get("/readyz").json()["detail"].startswith("gradio endpoint /lambda")
        response = c.post(
            "/api/chat",
            json={
                "inputs": "How do I sleep better?",
                "parameters": {
                    "model": "llama-2-13b-chat",
                    "max_new_tokens": 200,
                    "temperature": 0.5,
                    "top_p": 0.9,
                    "do_sample": True,
                },
            },
        )
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply.pop("usage")["estimated"] is True  # a Gradio app reports no token counts
    assert reply == {
        "generated_text": f"[llama-2-13b-chat|200|0.5] {TEMPLATED}",
        "model": "llama-2-13b-chat",
    }
    assert response.headers["x-upstream"] == "gradio"


def test_seed_app_values_outside_its_sliders_are_clamped(gradio_server: GradioServer) -> None:
    with gateway_server(upstream_url=f"{gradio_server.url}/seed") as url, audited_client(url) as c:
        response = c.post(
            "/api/predict",
            json={
                "inputs": "The heart is",
                "parameters": {"model": "llama-2-7b", "max_new_tokens": 5, "temperature": 0},
            },
        )
    assert response.status_code == 200, response.text
    # A base model gets the raw text; 5 tokens and temperature 0 fit the Space's sliders.
    assert response.json()["generated_text"] == "[llama-2-7b|10|0.1] The heart is"


def test_full_predict_endpoint_gets_every_parameter(gradio_server: GradioServer) -> None:
    with gateway_server(upstream_url=f"{gradio_server.url}/full") as url, audited_client(url) as c:
        response = c.post(
            "/api/chat",
            json={
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Tips for headaches?"},
                ],
                "parameters": {
                    "max_new_tokens": 64,
                    "temperature": 0.2,
                    "top_p": 0.8,
                    "do_sample": False,
                },
            },
        )
    assert response.status_code == 200, response.text
    text = response.json()["generated_text"]
    assert text == (
        "[llama-2-7b-chat|64|0.2] <s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! "
        "</s><s>[INST] Tips for headaches? [/INST] top_p=0.8 do_sample=False"
    )


def test_token_reaches_the_space_and_browser_authorization_does_not(
    gradio_server: GradioServer,
) -> None:
    marker = "token-check-7f1c"
    with gateway_server(upstream_url=f"{gradio_server.url}/full") as url, audited_client(url) as c:
        response = c.post(
            "/api/chat", json={"inputs": marker}, headers={"Authorization": CLIENT_AUTH}
        )
    assert response.status_code == 200
    calls = [r for r in gradio_server.received() if marker in r["tail"]]
    assert len(calls) == 1, "the Space recorded no call with the marker"
    headers = calls[-1]["headers"]
    assert headers["x-hf-authorization"] == f"Bearer {TOKEN}"
    assert "authorization" not in headers
    assert CLIENT_AUTH not in str(gradio_server.received())
    AUDIT.token_seen_upstream = True


def test_space_error_message_is_passed_on(gradio_server: GradioServer) -> None:
    with gateway_server(upstream_url=f"{gradio_server.url}/full") as url, audited_client(url) as c:
        response = c.post("/api/chat", json={"inputs": "please RAISE"})
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_error"
    assert "the model could not answer that" in response.json()["error"]


def test_slow_space_beyond_the_deadline_is_504(gradio_server: GradioServer) -> None:
    with (
        gateway_server(
            upstream_url=f"{gradio_server.url}/full",
            space_api_name="/slow",
            upstream_timeout=0.5,
            upstream_read_timeout=0.5,
        ) as url,
        audited_client(url) as c,
    ):
        response = c.post("/api/chat", json={"inputs": "wait"})
    assert response.status_code == 504
    assert response.json()["code"] == "upstream_timeout"


def test_many_concurrent_requests_all_answered(gradio_server: GradioServer) -> None:
    with gateway_server(upstream_url=f"{gradio_server.url}/full") as url:

        def one(i: int) -> httpx.Response:
            with audited_client(url) as c:
                return c.post("/api/chat", json={"inputs": f"question {i}"})

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(one, range(16)))
    assert [r.status_code for r in responses] == [200] * 16
    for i, response in enumerate(responses):
        assert f"question {i} [/INST]" in response.json()["generated_text"]


def test_a_path_that_is_not_a_gradio_app_is_a_clear_error(gradio_server: GradioServer) -> None:
    with (
        gateway_server(upstream_url=f"{gradio_server.url}/missing") as url,
        audited_client(url) as c,
    ):
        ready = c.get("/readyz")
        response = c.post("/api/chat", json={"inputs": "hi"})
    assert ready.status_code == 503
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_auth"


def test_space_down_then_up_is_discovered_lazily(gradio_server: GradioServer) -> None:
    # The gateway starts while nothing listens at the Space's address; the Space then comes
    # up there, and the gateway discovers it on a later request, with no restart.
    port = free_port()
    target = int(gradio_server.url.rsplit(":", 1)[1])
    with (
        gateway_server(upstream_url=f"http://127.0.0.1:{port}/full", rate_limit="off") as url,
        audited_client(url) as c,
    ):
        down_ready = c.get("/readyz")
        down = c.post("/api/chat", json={"inputs": "while down"})
        with TcpRelay(port, target):
            up = wait_until(
                lambda: (
                    (r := c.post("/api/chat", json={"inputs": "once up"})).status_code == 200 and r
                ),
                timeout=15,
                what="the gateway to discover the Space once it is up",
            )
            up_ready = c.get("/readyz")
    assert down_ready.status_code == 503
    assert (down.status_code, down.json()["code"]) == (502, "upstream_unreachable")
    assert up.json()["generated_text"].endswith("once up [/INST] top_p=0.95 do_sample=True")
    assert up_ready.status_code == 200
