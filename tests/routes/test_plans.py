"""Identical request bodies skip parsing: the memo of what a body came to answers as parsing
does, keeps only valid bodies, tells Accept and cache scopes apart, and stays bounded."""

from __future__ import annotations

import orjson
import pytest

from proxy.routes import bodies, chat
from proxy.routes.plans import Plans
from tests.conftest import gateway_client

BODY = orjson.dumps({"inputs": "How can I sleep better?", "parameters": {"max_new_tokens": 32}})
JSON = {"Content-Type": "application/json"}


def test_plans_are_bounded_by_entries_and_body_size() -> None:
    plans: Plans[int] = Plans(max_entries=3, max_body=10)
    for index in range(5):
        plans.keep((b"%d" % index, "", ""), index)
    assert len(plans) == 3
    assert plans.get((b"0", "", "")) is None and plans.get((b"4", "", "")) == 4  # oldest out
    plans.keep((b"x" * 11, "", ""), 9)
    assert plans.get((b"x" * 11, "", "")) is None


async def test_an_identical_body_is_parsed_once_and_answered_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed = []
    original = bodies.parse_chat_request

    def counting(body: bytes, **kw: int) -> bodies.ChatRequest:
        parsed.append(body)
        return original(body, **kw)

    monkeypatch.setattr(chat, "parse_chat_request", counting)
    async with gateway_client() as client:
        first = await client.post("/api/chat", content=BODY, headers=JSON)
        second = await client.post("/api/chat", content=BODY, headers=JSON)
        streamed = await client.post(
            "/api/chat", content=BODY, headers={**JSON, "Accept": "text/event-stream"}
        )
    assert first.json() == second.json()
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert streamed.headers["content-type"].startswith("text/event-stream")  # Accept counts
    assert len(parsed) == 2


async def test_an_invalid_body_is_refused_every_time() -> None:
    bad = orjson.dumps({"inputs": "hi", "parameters": {"max_new_tokens": 0}})
    async with gateway_client() as client:
        for _ in range(2):
            response = await client.post("/api/chat", content=bad, headers=JSON)
            assert response.status_code == 422
            assert response.json()["code"] == "invalid_parameter"


async def test_each_caller_has_its_own_plan_with_cache_scope_caller() -> None:
    """With CACHE_SCOPE=caller, two keys asking the same bytes each get their own entry."""
    async with gateway_client(api_keys="key-one-1234,key-two-5678", callers="key",
                              cache_scope="caller") as client:  # fmt: skip
        one = {**JSON, "Authorization": "Bearer key-one-1234"}
        two = {**JSON, "Authorization": "Bearer key-two-5678"}
        assert (await client.post("/api/chat", content=BODY, headers=one)).headers[
            "x-cache"
        ] == "MISS"
        assert (await client.post("/api/chat", content=BODY, headers=two)).headers[
            "x-cache"
        ] == "MISS"
        assert (await client.post("/api/chat", content=BODY, headers=two)).headers[
            "x-cache"
        ] == "HIT"


async def test_a_hit_answers_its_entry_as_it_is_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan keeps the bytes of the last hit it answered; once the entry is replaced (here
    by a ``no-cache`` request that generates again), hits answer the new entry."""
    from proxy.core.generation import Generation, GenerationRequest
    from proxy.upstreams.mock import MockUpstream

    made = []

    async def numbered(self: MockUpstream, req: GenerationRequest) -> Generation:
        made.append(req)
        return Generation(f"answer {len(made)}", req.model.name, self.name, "stop")

    monkeypatch.setattr(MockUpstream, "generate", numbered)
    async with gateway_client() as client:
        texts = []
        for headers in (JSON, JSON, JSON, {**JSON, "Cache-Control": "no-cache"}, JSON, JSON):
            response = await client.post("/api/chat", content=BODY, headers=headers)
            texts.append((response.headers["x-cache"], response.json()["generated_text"]))
    assert texts == [
        ("MISS", "answer 1"),
        ("HIT", "answer 1"),
        ("HIT", "answer 1"),
        ("MISS", "answer 2"),
        ("HIT", "answer 2"),
        ("HIT", "answer 2"),
    ]


async def test_a_kept_answer_tells_its_age_and_counts_as_a_hit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hit answered with the plan's kept bytes still says how old its entry is, is counted
    as a hit, and a request that may not read the cache (``no-cache``) is not given it."""
    from proxy.core import cache

    now = [1_700_000_000.0]
    monkeypatch.setattr(cache.time, "time", lambda: now[0])
    async with gateway_client() as client:
        seen = []
        for step, headers in enumerate(
            (JSON, JSON, JSON, JSON, {**JSON, "Cache-Control": "max-age=5"})
        ):
            now[0] += 4 if step else 0
            response = await client.post("/api/chat", content=BODY, headers=headers)
            seen.append((response.headers["x-cache"], response.headers.get("age")))
        metrics = (await client.get("/metrics")).text
    # The entry is made at the first answer; each later one is 4 s older.
    assert seen == [("MISS", None), ("HIT", "4"), ("HIT", "8"), ("HIT", "12"), ("MISS", None)]
    assert 'proxy_cache_requests_total{result="hit"} 3.0' in metrics
