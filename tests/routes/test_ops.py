"""GET /healthz, /readyz, /api/models and the landing page."""

from __future__ import annotations

import httpx

from tests.conftest import gateway_client


async def test_healthz(mock_client: httpx.AsyncClient) -> None:
    response = await mock_client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_in_test_mode(mock_client: httpx.AsyncClient) -> None:
    response = await mock_client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["upstream"] == "mock"


async def test_readyz_503_with_reason_when_upstream_down() -> None:
    async with gateway_client(upstream_url="http://127.0.0.1:9", upstream_connect_timeout=1) as c:
        response = await c.get("/readyz")
    assert response.status_code == 503
    data = response.json()
    assert data["status"] == "unavailable"
    assert data["code"] == "upstream_unreachable"
    assert "cannot connect" in data["error"]
    assert response.headers["retry-after"].isdigit()


async def test_models_lists_the_four_llama2_models(mock_client: httpx.AsyncClient) -> None:
    response = await mock_client.get("/api/models")
    data = response.json()
    assert {m["id"]: (m["hub_id"], m["type"]) for m in data["models"]} == {
        "llama-2-7b": ("meta-llama/Llama-2-7b-hf", "base"),
        "llama-2-13b": ("meta-llama/Llama-2-13b-hf", "base"),
        "llama-2-7b-chat": ("meta-llama/Llama-2-7b-chat-hf", "chat"),
        "llama-2-13b-chat": ("meta-llama/Llama-2-13b-chat-hf", "chat"),
    }
    assert data["default"] == "llama-2-7b-chat"
    assert data["test_mode"] is True
    assert data["models"][0]["defaults"]["temperature"] == 0.7


async def test_demo_page_and_its_files_are_served(mock_client: httpx.AsyncClient) -> None:
    response = await mock_client.get("/")
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
    assert '<script src="/static/app.js">' in response.text
    script = await mock_client.get("/static/app.js")
    assert script.status_code == 200
    assert "/api/chat" in script.text
    assert (await mock_client.get("/static/app.css")).status_code == 200
