"""CORS from ALLOWED_ORIGINS: exact headers for allowed, blocked and preflight requests."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import gateway_client

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


async def preflight(client: httpx.AsyncClient, origin: str) -> httpx.Response:
    return await client.options("/api/chat", headers={"Origin": origin, **PREFLIGHT})


@pytest.mark.parametrize(
    "origin", ["http://localhost:5173", "http://127.0.0.1:3000", "http://localhost"]
)
async def test_default_allows_local_development_origins(
    mock_client: httpx.AsyncClient, origin: str
) -> None:
    response = await preflight(mock_client, origin)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "Origin" in response.headers["vary"]
    assert "access-control-allow-credentials" not in response.headers


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://localhost.evil.example", "https://localhost:5173", "null"],
)
async def test_default_blocks_other_origins(mock_client: httpx.AsyncClient, origin: str) -> None:
    response = await preflight(mock_client, origin)
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    simple = await mock_client.post("/api/chat", json={"inputs": "x"}, headers={"Origin": origin})
    assert "access-control-allow-origin" not in simple.headers
    assert "Origin" in simple.headers["vary"]


async def test_allowed_origin_gets_headers_on_success_and_on_errors(
    mock_client: httpx.AsyncClient,
) -> None:
    origin = {"Origin": "http://localhost:8080"}
    ok = await mock_client.post("/api/chat", json={"inputs": "sleep"}, headers=origin)
    bad = await mock_client.post("/api/chat", json={"inputs": ""}, headers=origin)
    missing = await mock_client.get("/nope", headers=origin)
    for response in (ok, bad, missing):
        assert response.headers["access-control-allow-origin"] == "http://localhost:8080"
        assert response.headers["vary"] == "Origin"
        exposed = response.headers["access-control-expose-headers"]
        assert "X-Request-ID" in exposed and "Retry-After" in exposed
    assert bad.status_code == 422
    assert missing.status_code == 404


async def test_no_origin_header_means_no_cors_headers(mock_client: httpx.AsyncClient) -> None:
    response = await mock_client.get("/healthz")
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["vary"] == "Origin"


async def test_explicit_list_is_exact() -> None:
    async with gateway_client(
        allowed_origins="https://app.example.com, http://localhost:3000"
    ) as c:
        allowed = await preflight(c, "https://app.example.com")
        other_port = await preflight(c, "http://localhost:3001")
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert other_port.status_code == 400


async def test_star_only_when_set_and_without_credentials() -> None:
    async with gateway_client(allowed_origins="*") as client:
        response = await client.post(
            "/api/chat", json={"inputs": "x"}, headers={"Origin": "https://anything.example"}
        )
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


async def test_credentials_echo_the_origin() -> None:
    async with gateway_client(
        allowed_origins="https://app.example.com", cors_allow_credentials=True
    ) as client:
        response = await preflight(client, "https://app.example.com")
    assert response.headers["access-control-allow-origin"] == "https://app.example.com"
    assert response.headers["access-control-allow-credentials"] == "true"


async def test_unexpected_error_is_generic_500_inside_cors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from proxy.upstreams.mock import MockUpstream

    async def explode(self: MockUpstream, req: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(MockUpstream, "generate", explode)
    async with gateway_client() as client:
        response = await client.post(
            "/api/chat", json={"inputs": "x"}, headers={"Origin": "http://localhost:3000"}
        )
    assert response.status_code == 500
    assert response.json()["code"] == "internal_error"
    assert "secret internal detail" not in response.text
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {
        name: value
        for name, value in response.headers.items()
        if name.startswith("access-control-") or name == "vary"
    }


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"allowed_origins": "https://app.example.com"},
        {"allowed_origins": "https://app.example.com", "cors_allow_credentials": True},
        {"allowed_origins": "*"},
    ],
)
async def test_generation_routes_answer_cors_as_starlettes_middleware_does(
    settings: dict[str, object],
) -> None:
    # The generation routes add CORS headers in their own frame (web/dispatch.py); every other
    # route passes Starlette's CORSMiddleware. For each origin both must answer alike.
    origins = ["http://localhost:5173", "https://app.example.com", "https://evil.example"]
    async with gateway_client(**settings) as client:
        for origin in origins:
            hot = await client.post("/api/chat", json={"inputs": "x"}, headers={"Origin": origin})
            other = await client.get("/api/models", headers={"Origin": origin})
            assert cors_headers(hot) == cors_headers(other), origin
            assert "access-control-expose-headers" in cors_headers(hot)
