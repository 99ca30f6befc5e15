"""Who may generate: origins checked server-side, API keys, per-client rate limits with
their headers, and client addresses from trusted proxies only."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import gateway_client
from tests.support.audit import API_KEY
from tests.support.servers import free_port

BODY = {"inputs": "How can I sleep better?"}


async def test_a_disallowed_origin_is_refused_by_the_server_too() -> None:
    async with gateway_client(allowed_origins="https://app.example.com") as client:
        refused = await client.post(
            "/api/chat", json=BODY, headers={"Origin": "https://evil.example"}
        )
        allowed = await client.post(
            "/api/chat", json=BODY, headers={"Origin": "https://app.example.com"}
        )
        no_origin = await client.post("/api/chat", json=BODY)  # not a browser: no CORS
    assert refused.status_code == 403
    assert refused.json()["code"] == "origin_not_allowed"
    assert "ALLOWED_ORIGINS" in refused.json()["error"]
    assert allowed.status_code == 200 and no_origin.status_code == 200


async def test_star_allows_every_origin() -> None:
    async with gateway_client(allowed_origins="*") as client:
        response = await client.post(
            "/api/chat", json=BODY, headers={"Origin": "https://anywhere.example"}
        )
    assert response.status_code == 200


@pytest.mark.parametrize("route", ["/api/chat", "/api/predict", "/v1/chat/completions"])
async def test_api_keys_are_required_on_generation_routes(route: str) -> None:
    body = (
        {"model": "llama-2-7b-chat", "messages": [{"role": "user", "content": "hi"}]}
        if route.startswith("/v1")
        else BODY
    )
    async with gateway_client(api_keys=f"other-key,{API_KEY}") as client:
        missing = await client.post(route, json=body)
        wrong = await client.post(route, json=body, headers={"Authorization": "Bearer nope"})
        good = await client.post(route, json=body, headers={"Authorization": f"Bearer {API_KEY}"})
        browser = await client.post(route, json=body, headers={"Origin": "http://localhost:5173"})
        models = await client.get("/api/models")  # not a generation route

    def code(response: httpx.Response) -> str:  # each front in its own error shape
        body = response.json()
        return str(body["error"]["code"] if route.startswith("/v1/") else body["code"])

    assert (missing.status_code, code(missing)) == (401, "missing_api_key")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert (wrong.status_code, code(wrong)) == (401, "invalid_api_key")
    assert good.status_code == 200
    # An allowed Origin is a header any script can send: with keys required it is no way in.
    assert (browser.status_code, code(browser)) == (401, "missing_api_key")
    assert models.status_code == 200
    assert API_KEY not in wrong.text + good.text


async def test_rate_limit_headers_then_429_with_retry_after() -> None:
    async with gateway_client(rate_limit="3/minute;100/day") as client:
        responses = [await client.post("/api/chat", json=BODY) for _ in range(4)]
        other_route = await client.get("/api/models")
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    # The tightest limit is the one shown: 3 a minute, counting down.
    assert [r.headers["ratelimit-limit"] for r in responses] == ["3"] * 4
    assert [r.headers["ratelimit-remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert responses[0].headers["ratelimit-policy"] == "3;w=60"
    refused = responses[-1]
    body = refused.json()
    assert body["code"] == "rate_limited" and "3 per minute" in body["error"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert 0 <= int(refused.headers["ratelimit-reset"]) <= 60
    assert "ratelimit-limit" not in other_route.headers


async def test_cache_hits_count_against_the_limit() -> None:
    async with gateway_client(rate_limit="2/minute") as client:
        first = await client.post("/api/chat", json=BODY)
        hit = await client.post("/api/chat", json=BODY)
        third = await client.post("/api/chat", json=BODY)
    assert (first.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert third.status_code == 429


async def test_rate_limit_off() -> None:
    async with gateway_client(rate_limit="off") as client:
        responses = [await client.post("/api/chat", json=BODY) for _ in range(5)]
    assert all(r.status_code == 200 for r in responses)
    assert "ratelimit-limit" not in responses[0].headers


async def test_each_api_key_has_its_own_budget() -> None:
    keys = {"Authorization": f"Bearer {API_KEY}"}
    async with gateway_client(rate_limit="1/minute", api_keys=f"{API_KEY},second") as client:
        first = await client.post("/api/chat", json=BODY, headers=keys)
        again = await client.post("/api/chat", json=BODY, headers=keys)
        other = await client.post(
            "/api/chat", json=BODY, headers={"Authorization": "Bearer second"}
        )
    assert [first.status_code, again.status_code, other.status_code] == [200, 429, 200]


async def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    # httpx's ASGI transport connects from 127.0.0.1.
    spoofed = [{"X-Forwarded-For": f"203.0.113.{i}"} for i in range(3)]
    async with gateway_client(rate_limit="1/minute") as client:
        untrusted = [await client.post("/api/chat", json=BODY, headers=h) for h in spoofed]
    async with gateway_client(rate_limit="1/minute", trusted_proxies="127.0.0.0/8") as client:
        trusted = [await client.post("/api/chat", json=BODY, headers=h) for h in spoofed]
        same_client = await client.post("/api/chat", json=BODY, headers=spoofed[0])
    # Untrusted: the header is ignored, so all three are one client (the peer).
    assert [r.status_code for r in untrusted] == [200, 429, 429]
    # Trusted: three clients, each with its own budget.
    assert [r.status_code for r in trusted] == [200, 200, 200]
    assert same_client.status_code == 429


def test_client_address_takes_the_rightmost_untrusted_hop() -> None:
    from proxy.access.clients import ClientAddresses

    scope = {"client": ("10.0.0.5", 1234)}
    chain = "1.2.3.4, 198.51.100.7, 10.0.0.9"
    assert ClientAddresses(("10.0.0.0/8",)).of(scope, chain) == "198.51.100.7"
    assert ClientAddresses(()).of(scope, chain) == "10.0.0.5"
    assert ClientAddresses(("*",)).of(scope, chain) == "10.0.0.9"  # one hop: the router's
    assert ClientAddresses(("192.168.0.0/16",)).of(scope, chain) == "10.0.0.5"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("RATE_LIMIT", "lots", "30/minute"),
        ("TRUSTED_PROXIES", "not-an-ip", "IP address or network"),
    ],
)
def test_bad_settings_say_what_to_fix(name: str, value: str, words: str) -> None:
    from proxy.config.environment import describe_error
    from proxy.config.fields import ConfigError
    from proxy.config.settings import Settings

    with pytest.raises(ConfigError) as info:
        Settings(**{name.lower(): value})
    message = describe_error(info.value)
    assert name in message and words in message


async def test_limits_hold_per_instance_while_the_shared_store_is_down() -> None:
    # REDIS_URL names a port where nothing listens: the shared store is down from the start.
    # Limits must not fail open; each instance counts on its own until Redis is back.
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with gateway_client(redis_url=dead, rate_limit="2/minute") as client:
        answers = [await client.post("/api/chat", json=BODY) for _ in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert answers[2].json()["code"] == "rate_limited"
    assert answers[2].headers["retry-after"]
    assert answers[0].headers["x-cache"] == "BYPASS"  # the cache is down too: served uncached


def test_a_forwarded_hop_counts_only_if_it_is_an_address() -> None:
    from proxy.access.clients import ClientAddresses

    scope = {"client": ("10.0.0.5", 1234)}
    anyone = ClientAddresses(("*",))
    assert anyone.of(scope, "x" * 8000) == "10.0.0.5"  # junk is no identity: the peer
    assert anyone.of(scope, "1.2.3.4, not-an-ip") == "10.0.0.5"
    assert ClientAddresses(("10.0.0.0/8",)).of(scope, "junk, 10.0.0.9") == "10.0.0.5"
    assert anyone.of(scope, "::ffff:198.51.100.7") == "198.51.100.7"


def test_an_ipv6_client_is_its_slash_64() -> None:
    from proxy.access.clients import ClientAddresses

    anyone = ClientAddresses(("*",))
    scope = {"client": ("10.0.0.5", 1234)}
    one = anyone.of(scope, "2001:db8:1:2::1")
    assert one == anyone.of(scope, "2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert anyone.of(scope, "2001:db8:1:3::1") != one
    assert ClientAddresses(()).of({"client": ("2001:db8::7", 1)}, None) == "2001:db8::/64"


async def test_rotating_ipv6_addresses_in_one_block_share_one_budget() -> None:
    async with gateway_client(rate_limit="2/minute", trusted_proxies="*") as client:
        answers = [
            await client.post(
                "/api/chat", json=BODY, headers={"X-Forwarded-For": f"2001:db8:5:6::{i:x}"}
            )
            for i in range(1, 5)
        ]
    assert [a.status_code for a in answers] == [200, 200, 429, 429]


def test_known_addresses_stay_bounded_and_right() -> None:
    """The memo of (peer, X-Forwarded-For) pairs answers as the parse does, holds at most
    KNOWN_MAX pairs, and leaves out headers too long to be worth keeping."""
    from proxy.access import clients
    from proxy.access.clients import ClientAddresses

    addresses = ClientAddresses(("10.0.0.0/8",))
    for index in range(clients.KNOWN_MAX + 10):
        forwarded = f"198.51.{index // 256 % 256}.{index % 256}"
        scope = {"client": ("10.0.0.5", 1234)}
        assert addresses.of(scope, forwarded) == forwarded
        assert addresses.of(scope, forwarded) == forwarded  # the memo's answer
    assert len(addresses._known) <= clients.KNOWN_MAX
    long = ", ".join(["203.0.113.1"] * 40)
    assert addresses.of({"client": ("10.0.0.5", 1)}, long) == "203.0.113.1"
    assert (("10.0.0.5", long)) not in addresses._known
