"""The gateway as a function: Vercel's entry point (``index.py``) driven without lifespan
events, the AWS Lambda handler invoked with API Gateway and function-URL events, and imports
that a configuration does not use left out of the cold start."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

import proxy.serverless as serverless
from proxy import Settings, create_app
from proxy.serverless import OnDemand, lambda_handler
from tests.support.audit import AUDIT
from tests.support.fake_llm_servers import FakeOpenAI
from tests.support.processes import clean_env, python_output, running
from tests.support.servers import ThreadServer, free_port

pytestmark = pytest.mark.e2e

BODY = {"inputs": "How can I sleep better?"}
ORIGIN = "http://localhost:5173"


# A fresh process imports the Vercel entry point and serves one generation through it.
SERVE_ONE = """
import asyncio, httpx, index
async def main():
    transport = httpx.ASGITransport(app=index.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
        await client.post("/api/chat", json={"inputs": "hello"})
    await index.app.aclose()
asyncio.run(main())
"""


def imported_after_one_request(**env: str) -> set[str]:
    """The top-level modules a fresh process has imported, once it served a request."""
    probe = SERVE_ONE + "import sys\nprint(' '.join({m.split('.')[0] for m in sys.modules}))"
    return set(python_output(probe, env=clean_env(**env)).split())


def test_test_mode_imports_neither_redis_nor_aiohttp() -> None:
    modules = imported_after_one_request()
    assert "proxy" in modules and "starlette" in modules
    assert not modules & {"redis", "aiohttp", "gradio_client", "huggingface_hub", "mangum"}
    # Settings and request bodies are read without pydantic (its import alone costs about
    # 50 ms at a cold start), and test mode's rate limits without the limits library.
    assert not modules & {"pydantic", "pydantic_core", "pydantic_settings", "dotenv", "limits"}


def test_each_configuration_imports_what_it_uses() -> None:
    assert "redis" in imported_after_one_request(REDIS_URL="redis://127.0.0.1:1/0")
    space = imported_after_one_request(UPSTREAM_URL="http://127.0.0.1:1")
    assert "aiohttp" in space and "redis" not in space


def test_an_answering_upstream_leaves_the_retry_library_unimported() -> None:
    """stamina (with tenacity, 10 ms of a cold start) is imported by a first retry only."""
    fake = FakeOpenAI()
    with ThreadServer(fake.app(), lifespan="off") as served:  # type: ignore[attr-defined]
        modules = imported_after_one_request(UPSTREAM_URL=f"{served.url}/v1",
                                             UPSTREAM_KIND="openai")  # fmt: skip
    assert len(fake.requests) == 1  # the generation reached the upstream, and once
    assert "aiohttp" in modules and not modules & {"stamina", "tenacity"}


@pytest.fixture(scope="module")
def vercel_url() -> Iterator[str]:
    """``index:app`` in a fresh process, served with no lifespan events at all."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "index:app", "--lifespan", "off",
               "--port", str(port)]  # fmt: skip
    with running(command, clean_env(MOCK_TOKEN_DELAY_MS="0"), port) as gateway:
        yield gateway.url


def audited(response: httpx.Response) -> httpx.Response:
    AUDIT.record_response(response)
    return response


def test_vercel_entry_serves_without_lifespan(vercel_url: str) -> None:
    reply = audited(httpx.post(f"{vercel_url}/api/chat", json=BODY, timeout=10))
    again = audited(httpx.post(f"{vercel_url}/api/chat", json=BODY, timeout=10))
    models = audited(httpx.get(f"{vercel_url}/v1/models", timeout=10))
    assert reply.status_code == 200 and reply.json()["generated_text"]
    assert reply.headers["x-upstream"] == "mock" and reply.headers["x-request-id"]
    assert (reply.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
    assert models.json()["data"][0]["id"] == "llama-2-7b-chat"


def test_vercel_entry_streams(vercel_url: str) -> None:
    with httpx.stream(
        "POST", f"{vercel_url}/api/chat", json={"inputs": "hydration tips", "stream": True},
        timeout=10,
    ) as response:  # fmt: skip
        text = response.read().decode()
    assert response.headers["content-type"].startswith("text/event-stream")
    assert text.count("event: token") > 5 and text.count("event: done") == 1


def test_vercel_entry_cors_and_errors(vercel_url: str) -> None:
    preflight = audited(httpx.options(f"{vercel_url}/api/chat", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }, timeout=10))  # fmt: skip
    headers = {"Content-Type": "application/json", "Origin": ORIGIN}
    bad = audited(httpx.post(f"{vercel_url}/api/chat", content=b"{nope", headers=headers))
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_json")
    assert bad.headers["access-control-allow-origin"] == ORIGIN


async def test_twenty_concurrent_first_requests_start_the_app_once() -> None:
    app = OnDemand(create_app(Settings(mock_token_delay_ms=0)))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
            replies = await asyncio.gather(
                *(client.post("/api/chat", json={"inputs": f"q{i}"}) for i in range(20))
            )
    finally:
        await app.aclose()
    assert [r.status_code for r in replies] == [200] * 20
    assert app.starts == 1


async def test_a_platform_that_sends_lifespan_events_starts_it_once() -> None:
    app = OnDemand(create_app(Settings(mock_token_delay_ms=0)))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fn") as client:
            reply = await client.post("/api/chat", json=BODY)
    assert reply.status_code == 200
    assert app.starts == 0  # the server's lifespan ran it; no second start on first use


# Events as AWS sends them, trimmed to what an adapter reads.
API_DOMAIN = "abc.execute-api.eu-west-1.amazonaws.com"


def http_api_event(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    base64_body: bool = False,
    domain: str = API_DOMAIN,
) -> dict[str, Any]:
    """API Gateway HTTP API (payload 2.0); a function URL sends the same shape."""
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"host": domain, **(headers or {})},
        "requestContext": {"domainName": domain, "http": {
            "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7"}},
        "body": base64.b64encode(body).decode() if base64_body else body.decode(),
        "isBase64Encoded": base64_body,
    }  # fmt: skip


def rest_api_event(method: str, path: str, body: bytes = b"",
                   headers: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """API Gateway REST API (payload 1.0)."""
    all_headers = {"Host": API_DOMAIN, **(headers or {})}
    return {
        "resource": "/{proxy+}", "path": path, "httpMethod": method,
        "headers": all_headers, "multiValueHeaders": {k: [v] for k, v in all_headers.items()},
        "queryStringParameters": None, "multiValueQueryStringParameters": None,
        "requestContext": {"identity": {"sourceIp": "203.0.113.7"}, "stage": "prod"},
        "body": body.decode() or None, "isBase64Encoded": False,
    }  # fmt: skip


@pytest.fixture
def handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh warm Lambda instance: the handler as AWS calls it, built on first use."""
    monkeypatch.setenv("MOCK_TOKEN_DELAY_MS", "0")
    monkeypatch.setattr(serverless, "_HANDLER", None)

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        result = lambda_handler(event, None)
        AUDIT.add(json.dumps(result))
        return result

    yield invoke
    # The instance is retired: its app shut down, and the loop mangum ran it on closed.
    loop = asyncio.get_event_loop()
    if serverless._HANDLER is not None:
        loop.run_until_complete(serverless._HANDLER.app.aclose())
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()
    asyncio.set_event_loop(None)


JSON = {"Content-Type": "application/json"}
FUNCTION_URL = "abcdefg.lambda-url.eu-west-1.on.aws"


def headers_of(result: dict[str, Any]) -> dict[str, str]:
    return {k.lower(): v for k, v in result["headers"].items()}


@pytest.mark.parametrize("kind", ["http-api", "rest-api", "function-url"])
def test_lambda_generates_and_a_warm_handler_shares_its_cache(handler: Any, kind: str) -> None:
    body = json.dumps(BODY).encode()
    if kind == "rest-api":
        events = [rest_api_event("POST", "/api/chat", body, JSON) for _ in range(2)]
    else:
        domain = (
            FUNCTION_URL if kind == "function-url" else "abc.execute-api.eu-west-1.amazonaws.com"
        )
        events = [http_api_event("POST", "/api/chat", body, JSON, domain=domain) for _ in range(2)]
    first, second = handler(events[0]), handler(events[1])
    assert first["statusCode"] == 200
    assert json.loads(first["body"])["generated_text"]
    assert headers_of(first)["x-request-id"] and headers_of(first)["x-upstream"] == "mock"
    assert (headers_of(first)["x-cache"], headers_of(second)["x-cache"]) == ("MISS", "HIT")


def test_lambda_base64_body_preflight_and_bad_input(handler: Any) -> None:
    encoded = handler(http_api_event("POST", "/api/chat", json.dumps(BODY).encode(), JSON,
                                     base64_body=True))  # fmt: skip
    preflight = handler(http_api_event("OPTIONS", "/api/chat", headers={
        "origin": ORIGIN, "access-control-request-method": "POST"}))  # fmt: skip
    bad = handler(http_api_event("POST", "/api/chat", b"not json", JSON))
    assert encoded["statusCode"] == 200
    assert preflight["statusCode"] == 200
    assert headers_of(preflight)["access-control-allow-origin"] == ORIGIN
    assert bad["statusCode"] == 400
    assert json.loads(bad["body"])["code"] == "invalid_json"


def test_lambda_buffers_a_stream_into_one_response(handler: Any) -> None:
    body = json.dumps({**BODY, "stream": True}).encode()
    result = handler(http_api_event("POST", "/api/chat", body, JSON))
    assert result["statusCode"] == 200
    assert headers_of(result)["content-type"].startswith("text/event-stream")
    assert result["body"].count("event: done") == 1  # whole, at the end: no incremental delivery
