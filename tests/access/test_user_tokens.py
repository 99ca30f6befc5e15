"""User tokens against JWKS providers that misbehave or are misused: an algorithm that does
not fit its key, a provider that fails, drips or redirects elsewhere, keys without a key id,
and tokens that live too long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

import proxy.access.user_tokens
from tests.access.test_auth import AUDIENCE, BODY, ISSUER, bearer, claims
from tests.conftest import gateway_client
from tests.support.servers import ThreadServer

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(key: Any, **more: Any) -> dict[str, Any]:
    return {**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), **more}


class Provider:
    """A JWKS endpoint whose behaviour a test sets; counts its fetches."""

    def __init__(self) -> None:
        self.fetches = 0
        self.mode = "ok"
        self.keys = [jwk(RSA_KEY, kid="rsa-1", alg="RS256")]
        self.elsewhere = ""

    async def jwks(self, request: Request) -> Response:
        self.fetches += 1
        if self.mode == "fail":
            return Response("boom", status_code=500)
        if self.mode == "redirect":
            return RedirectResponse(self.elsewhere)
        if self.mode == "drip":

            async def drip() -> AsyncIterator[bytes]:
                for byte in b'{"keys": []}':
                    await asyncio.sleep(0.4)
                    yield bytes([byte])

            return StreamingResponse(drip(), media_type="application/json")
        return JSONResponse({"keys": self.keys})


@pytest.fixture
def provider() -> Any:
    found = Provider()
    app = Starlette(routes=[Route("/jwks", found.jwks)])
    with ThreadServer(app, lifespan="off") as server:
        yield found, f"{server.url}/jwks"


def settings(url: str, **more: Any) -> dict[str, Any]:
    return {"jwt_jwks_url": url, "jwt_issuer": ISSUER, "jwt_audience": AUDIENCE,
            "rate_limit": "off", "auth_failures": "1000/minute", **more}  # fmt: skip


async def test_an_algorithm_that_does_not_fit_its_key_is_a_401_never_a_500(provider: Any) -> None:
    found, url = provider
    forged = jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "rsa-1"})
    async with gateway_client(**settings(url)) as client:
        response = await client.post("/api/chat", json=BODY, headers=bearer(forged))
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"
    assert "ES256" in response.json()["error"]


async def test_a_failed_fetch_is_remembered_like_a_good_one(provider: Any) -> None:
    found, url = provider
    found.mode = "fail"
    async with gateway_client(**settings(url, jwt_jwks_refresh=30)) as client:
        answers = []
        for index in range(30):
            token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": f"k{index}"})
            answers.append(await client.post("/api/chat", json=BODY, headers=bearer(token)))
    assert {a.status_code for a in answers} == {503}
    assert {a.json()["code"] for a in answers} == {"auth_unavailable"}
    assert found.fetches == 1


async def test_a_dripping_provider_is_cut_at_one_deadline(
    provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    found, url = provider
    found.mode = "drip"  # a byte every 0.4 s: every read is quick, the whole takes 4.8 s
    monkeypatch.setattr(proxy.access.user_tokens, "JWKS_TIMEOUT", 1.0)
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    async with gateway_client(**settings(url)) as client:
        started = time.monotonic()
        response = await client.post("/api/chat", json=BODY, headers=bearer(token))
        took = time.monotonic() - started
    assert response.status_code == 503 and took < 3  # 1.5 times the deadline at most


async def test_keys_without_a_key_id_are_kept_and_tried(provider: Any) -> None:
    found, url = provider
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    found.keys = [jwk(other), jwk(RSA_KEY)]  # neither names a kid
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    async with gateway_client(**settings(url)) as client:
        answers = [
            await client.post("/api/chat", json=BODY, headers=bearer(token)) for _ in range(3)
        ]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert found.fetches == 1


async def test_a_redirect_to_another_host_is_not_followed(provider: Any) -> None:
    found, url = provider
    elsewhere = Provider()
    with ThreadServer(Starlette(routes=[Route("/jwks", elsewhere.jwks)]), lifespan="off") as other:
        found.mode, found.elsewhere = "redirect", f"{other.url}/jwks"
        token = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
        async with gateway_client(**settings(url)) as client:
            response = await client.post("/api/chat", json=BODY, headers=bearer(token))
    assert response.status_code == 503
    assert elsewhere.fetches == 0


async def test_a_token_that_lives_too_long_is_refused_when_a_lifetime_is_set(
    provider: Any,
) -> None:
    found, url = provider
    now = int(time.time())
    long_lived = jwt.encode(claims(iat=now, exp=now + 86400 * 30), RSA_KEY, algorithm="RS256",
                            headers={"kid": "rsa-1"})  # fmt: skip
    short = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    async with gateway_client(**settings(url, jwt_max_lifetime=3600)) as client:
        refused = await client.post("/api/chat", json=BODY, headers=bearer(long_lived))
        accepted = await client.post("/api/chat", json=BODY, headers=bearer(short))
    assert refused.status_code == 401 and "JWT_MAX_LIFETIME" in refused.json()["error"]
    assert accepted.status_code == 200
