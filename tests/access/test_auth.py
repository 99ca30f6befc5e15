"""Who may generate, as an attacker tries it: forged Origins, user tokens (against a JWKS server
started here with keys made here: valid, expired, wrong audience, wrong issuer, wrong key,
``alg: none``, a key rotation), guessed keys and admin tokens (throttled), and the cache's
privacy between callers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import gateway_client
from tests.support.audit import API_KEY
from tests.support.servers import ThreadServer

BODY = {"inputs": "How can I sleep better?"}
ISSUER = "https://auth.example.test/"
AUDIENCE = "health-app"
SECRET = "a-shared-secret-of-32-bytes-long!!"
ORIGIN = {"Origin": "http://localhost:5173"}


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "user-1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600,
            **changes}  # fmt: skip


class KeyServer:
    """A JWKS endpoint whose keys a test can rotate; counts its fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        self.add("key-1")

    def add(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def sign(self, kid: str, **changes: Any) -> str:
        return jwt.encode(claims(**changes), self.keys[kid], algorithm="RS256",
                          headers={"kid": kid})  # fmt: skip

    async def jwks(self, request: Request) -> JSONResponse:
        self.fetches += 1
        found = []
        for kid, key in self.keys.items():
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            found.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return JSONResponse({"keys": found})


@pytest.fixture(scope="module")
def key_server() -> Iterator[tuple[KeyServer, str]]:
    keys = KeyServer()
    app = Starlette(routes=[Route("/.well-known/jwks.json", keys.jwks)])
    with ThreadServer(app, lifespan="off") as server:
        yield keys, f"{server.url}/.well-known/jwks.json"


async def test_an_allowed_origin_is_no_way_around_required_keys_unless_named() -> None:
    async with gateway_client(api_keys=API_KEY) as client:
        forged = await client.post("/api/chat", json=BODY, headers=ORIGIN)
    async with gateway_client(api_keys=API_KEY, callers="browser,key") as client:
        browser = await client.post("/api/chat", json=BODY, headers=ORIGIN)
        script = await client.post("/api/chat", json=BODY)
        keyed = await client.post("/api/chat", json=BODY, headers=bearer(API_KEY))
    assert (forged.status_code, forged.json()["code"]) == (401, "missing_api_key")
    assert browser.status_code == 200 and keyed.status_code == 200
    assert script.status_code == 401


async def test_anyone_is_the_default_without_credentials_configured() -> None:
    async with gateway_client() as client:
        plain = await client.post("/api/chat", json=BODY)
        with_junk = await client.post("/api/chat", json=BODY, headers=bearer("whatever"))
    assert plain.status_code == 200 and with_junk.status_code == 200


async def test_user_tokens_with_a_shared_secret() -> None:
    good = jwt.encode(claims(), SECRET, algorithm="HS256")
    async with gateway_client(jwt_secret=SECRET, jwt_issuer=ISSUER,
                              jwt_audience=AUDIENCE) as client:  # fmt: skip
        ok = await client.post("/api/chat", json=BODY, headers=bearer(good))
        missing = await client.post("/api/chat", json=BODY)
        forged = await client.post(
            "/api/chat", json=BODY,
            headers=bearer(jwt.encode(claims(), "another-secret-of-32-bytes-long!!", "HS256")),
        )  # fmt: skip
    assert ok.status_code == 200
    assert (missing.status_code, missing.json()["code"]) == (401, "missing_token")
    assert (forged.status_code, forged.json()["code"]) == (401, "invalid_token")
    assert "signature" in forged.json()["error"]


def unsigned(**changes: Any) -> str:
    """A token with ``alg: none``, as an attacker crafts it."""
    return jwt.encode(claims(**changes), key=None, algorithm="none")


@pytest.mark.parametrize(
    ("make", "code", "words"),
    [
        (lambda k: k.sign("key-1"), None, ""),
        (lambda k: k.sign("key-1", exp=int(time.time()) - 3600), "token_expired", "expired"),
        (lambda k: k.sign("key-1", aud="another-app"), "invalid_token", "audience"),
        (lambda k: k.sign("key-1", iss="https://evil.example/"), "invalid_token", "issuer"),
        (lambda k: unsigned(), "invalid_token", "'none'"),
        (lambda k: KeyServer().sign("key-1"), "invalid_token", "signature"),  # wrong key
        (lambda k: "eyJhbGciOiJSUzI1NiJ9.e30.bm90LWEtc2lnbmF0dXJl", "invalid_token", ""),
    ],
    ids=["valid", "expired", "wrong audience", "wrong issuer", "alg none", "wrong key",
         "garbage"],
)  # fmt: skip
async def test_user_tokens_against_the_providers_jwks(
    key_server: tuple[KeyServer, str], make: Any, code: str | None, words: str
) -> None:
    keys, url = key_server
    async with gateway_client(jwt_jwks_url=url, jwt_issuer=ISSUER,
                              jwt_audience=AUDIENCE) as client:  # fmt: skip
        response = await client.post("/api/chat", json=BODY, headers=bearer(make(keys)))
    if code is None:
        assert response.status_code == 200
        return
    assert response.status_code == 401, response.text
    assert response.json()["code"] == code
    assert words in response.json()["error"]
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_key_rotation_is_picked_up_and_unknown_keys_do_not_hammer_the_provider(
    key_server: tuple[KeyServer, str],
) -> None:
    keys, url = key_server
    async with gateway_client(jwt_jwks_url=url, jwt_issuer=ISSUER, jwt_jwks_refresh=0.3,
                              auth_failures="1000/minute") as client:  # fmt: skip
        before = await client.post("/api/chat", json=BODY, headers=bearer(keys.sign("key-1")))
        fetches = keys.fetches
        keys.add("key-2")  # the provider rotates: new tokens name the new key
        fresh = keys.sign("key-2")
        await asyncio.sleep(0.35)  # past JWT_JWKS_REFRESH since the first fetch
        after = await client.post("/api/chat", json=BODY, headers=bearer(fresh))
        fetched_for_rotation = keys.fetches - fetches
        # Made-up key ids: at most one fetch per JWT_JWKS_REFRESH, however many arrive.
        keys.add("never-listed")
        guesses = [keys.sign("never-listed", sub=f"u{i}") for i in range(20)]
        del keys.keys["never-listed"]
        start = keys.fetches
        answers = [await client.post("/api/chat", json=BODY, headers=bearer(g)) for g in guesses]
    assert before.status_code == 200 and after.status_code == 200
    assert fetched_for_rotation == 1
    assert {a.status_code for a in answers} == {401}
    assert keys.fetches - start <= 1


async def test_each_user_has_a_rate_limit_of_their_own() -> None:
    one, two = (jwt.encode(claims(sub=s), SECRET, algorithm="HS256") for s in ("ann", "bob"))
    async with gateway_client(jwt_secret=SECRET, rate_limit="2/minute") as client:
        ann = [await client.post("/api/chat", json=BODY, headers=bearer(one)) for _ in range(3)]
        bob = await client.post("/api/chat", json=BODY, headers=bearer(two))
    assert [r.status_code for r in ann] == [200, 200, 429]
    assert bob.status_code == 200


async def test_the_jwks_down_is_a_503_not_a_refusal() -> None:
    async with gateway_client(jwt_jwks_url="http://127.0.0.1:9/jwks.json",
                              jwt_issuer=ISSUER) as client:  # fmt: skip
        response = await client.post(
            "/api/chat", json=BODY, headers=bearer(KeyServer().sign("key-1"))
        )
    assert response.status_code == 503
    assert response.json()["code"] == "auth_unavailable"
    assert response.headers["retry-after"]


@pytest.mark.parametrize(
    ("settings", "path", "method", "right"),
    [
        ({"api_keys": API_KEY}, "/api/chat", "POST", API_KEY),
        ({"admin_token": "admin-secret-123"}, "/api/cache", "DELETE", "admin-secret-123"),
        ({"metrics_token": "metrics-secret-123"}, "/metrics", "GET", "metrics-secret-123"),
    ],
    ids=["api key", "admin token", "metrics token"],
)
async def test_guessing_is_throttled_per_address_but_a_right_credential_gets_in(
    settings: dict[str, str], path: str, method: str, right: str
) -> None:
    """Behind a shared router every client has one address: one client's wrong guesses are
    throttled, and the right credential is still accepted from the same address."""
    guess = "wrong-guess-0123456789"
    async with gateway_client(auth_failures="5/minute", rate_limit="off", **settings) as client:
        answers = [
            await client.request(method, path, json=BODY, headers=bearer(guess)) for _ in range(7)
        ]
        good = await client.request(method, path, json=BODY, headers=bearer(right))
        again = await client.request(method, path, json=BODY, headers=bearer(guess))
    assert [a.status_code for a in answers] == [401] * 5 + [429] * 2
    refused = answers[-1]
    assert refused.json()["code"] == "too_many_failed_auth"
    assert int(refused.headers["retry-after"]) >= 1
    assert good.status_code == 200
    assert again.status_code == 429  # a good one does not reset the failures


async def test_signed_user_tokens_are_never_throttled() -> None:
    """A forged token cannot be guessed into a valid one: no lock-out for anyone."""
    forged = jwt.encode(claims(), "wrong-secret-of-32-bytes-long!!!!", "HS256")
    async with gateway_client(auth_failures="5/minute", rate_limit="off",
                              jwt_secret=SECRET) as client:  # fmt: skip
        answers = [
            await client.post("/api/chat", json=BODY, headers=bearer(forged)) for _ in range(8)
        ]
        good = await client.post(
            "/api/chat", json=BODY, headers=bearer(jwt.encode(claims(), SECRET, "HS256"))
        )
    assert [a.status_code for a in answers] == [401] * 8
    assert good.status_code == 200


async def test_cache_entries_are_the_callers_own_by_default() -> None:
    a, b = bearer(API_KEY), bearer("second-key-0123456789")
    keys = f"{API_KEY},second-key-0123456789"
    async with gateway_client(api_keys=keys, rate_limit="off") as client:
        first = await client.post("/api/chat", json=BODY, headers=a)
        again = await client.post("/api/chat", json=BODY, headers=a)
        other = await client.post("/api/chat", json=BODY, headers=b)
    assert [r.headers["x-cache"] for r in (first, again, other)] == ["MISS", "HIT", "MISS"]


async def test_a_shared_cache_hides_its_state_from_callers_without_credentials() -> None:
    async with gateway_client(cache_scope="shared", rate_limit="off", api_keys=API_KEY,
                              callers="anyone,key") as client:  # fmt: skip
        anonymous = [await client.post("/api/chat", json=BODY) for _ in range(2)]
        keyed = await client.post("/api/chat", json=BODY, headers=bearer(API_KEY))
    for response in anonymous:
        assert "x-cache" not in response.headers and "age" not in response.headers
        assert response.headers["x-upstream"] == "mock"
    assert keyed.headers["x-cache"] == "HIT"  # one entry for everyone


async def test_two_origin_headers_are_refused() -> None:
    async with gateway_client() as client:
        response = await client.post(
            "/api/chat",
            json=BODY,
            headers=[("Origin", "http://localhost:5173"), ("Origin", "https://evil.example")],
        )
    assert response.status_code == 400
    assert response.json()["code"] == "duplicate_header"


@pytest.mark.parametrize("invisible", ["\u200b", "\u200b \ufeff\u200d", "\u2060\n"])
async def test_an_invisible_prompt_is_empty(invisible: str) -> None:
    async with gateway_client() as client:
        response = await client.post("/api/chat", json={"inputs": invisible})
    assert response.status_code == 422
    assert response.json()["code"] == "empty_prompt"


async def test_errors_never_echo_a_long_value() -> None:
    huge = "9" * 4000
    async with gateway_client() as client:
        seed = await client.post(
            "/api/chat",
            content=f'{{"inputs": "hi", "parameters": {{"max_new_tokens": {huge}}}}}',
            headers={"Content-Type": "application/json"},
        )
        openai = await client.post(
            "/v1/chat/completions",
            content=f'{{"model": "llama-2-7b-chat", "max_tokens": {huge}, '
            '"messages": [{"role": "user", "content": "hi"}]}',
            headers={"Content-Type": "application/json"},
        )
        field = await client.post("/api/chat", json={"inputs": "hi", "x" * 5000: 1})
    assert seed.status_code == 422 and len(seed.text) < 400
    assert openai.status_code == 400 and len(openai.text) < 400
    assert field.status_code == 400 and len(field.text) < 500


async def test_a_trailing_slash_is_a_404_not_a_redirect_built_from_host() -> None:
    async with gateway_client() as client:
        response = await client.post(
            "/api/chat/", json=BODY, headers={"Host": "evil.example"}, follow_redirects=False
        )
    assert response.status_code == 404
    assert "location" not in response.headers


async def test_the_page_and_its_files_carry_security_headers() -> None:
    async with gateway_client() as client:
        answers = [await client.get(path) for path in ("/", "/static/app.js", "/static/app.css")]
    for response in answers:
        assert response.status_code == 200
        policy = response.headers["content-security-policy"]
        assert "connect-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-frame-options"] == "DENY"
