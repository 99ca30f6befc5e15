"""proxy/core/cache.py: the key's normalisation, Cache-Control, and the memory backend's bounds."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.core.cache import (
    CachedGeneration,
    CachePolicy,
    MemoryCache,
    cache_key,
    parse_cache_control,
)
from proxy.core.catalog import Catalog
from proxy.core.generation import Generation
from proxy.routes.bodies import to_generation_request
from tests.support.bodies import chat_body

CATALOG = Catalog(default="llama-2-7b-chat")


def key(body: dict[str, Any], upstream: str = "mock") -> str:
    req = to_generation_request(
        chat_body(**body),
        CATALOG,
        max_prompt_chars=10_000,
        max_new_tokens_limit=1024,
        system_prompt=None,
    )
    return cache_key(req, upstream)


def test_defaults_filled_in_share_an_entry() -> None:
    assert key({"inputs": "x"}) == key({"inputs": "x", "parameters": {"temperature": 0.7}})
    assert key({"inputs": "x"}) == key(
        {
            "inputs": "x",
            "parameters": {
                "model": "llama-2-7b-chat",
                "top_p": 0.95,
                "do_sample": True,
                "max_new_tokens": 512,
            },
        }
    )
    assert key({"inputs": "x"}) == key({"messages": [{"role": "user", "content": "x"}]})
    assert key({"inputs": "x", "model": "meta-llama/Llama-2-7b-chat-hf"}) == key({"inputs": "x"})


def test_floats_are_normalised() -> None:
    assert key({"inputs": "x", "parameters": {"temperature": 0.30000000000000004}}) == key(
        {"inputs": "x", "parameters": {"temperature": 0.3}}
    )


def test_greedy_ignores_sampling_parameters() -> None:
    assert key({"inputs": "x", "parameters": {"temperature": 0}}) == key(
        {"inputs": "x", "parameters": {"do_sample": False, "temperature": 1.3, "top_p": 0.5}}
    )


@pytest.mark.parametrize(
    "other",
    [
        {"inputs": "y"},
        {"inputs": "x", "parameters": {"temperature": 0.8}},
        {"inputs": "x", "parameters": {"max_new_tokens": 100}},
        {"inputs": "x", "model": "llama-2-13b-chat"},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "x"},
            ]
        },
    ],
)
def test_anything_that_changes_the_reply_changes_the_key(other: dict[str, Any]) -> None:
    assert key({"inputs": "x"}) != key(other)


def test_upstream_is_part_of_the_key_and_no_prompt_text_is() -> None:
    assert key({"inputs": "secret symptom"}, "mock") != key({"inputs": "secret symptom"}, "gradio")
    digest = key({"inputs": "secret symptom"})
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert "secret" not in digest


@pytest.mark.parametrize(
    ("header", "policy"),
    [
        ("", CachePolicy()),
        ("no-store", CachePolicy(read=False, write=False)),
        ("No-Cache", CachePolicy(read=False, write=True)),
        ("max-age=30", CachePolicy(max_age=30)),
        ("max-age=0, must-revalidate", CachePolicy(max_age=0)),
        ("no-cache, no-store", CachePolicy(read=False, write=False)),
    ],
)
def test_cache_control(header: str, policy: CachePolicy) -> None:
    assert parse_cache_control(header) == policy


def entry(text: str) -> CachedGeneration:
    return CachedGeneration.of(Generation(text, "llama-2-7b-chat", "mock"))


async def test_memory_evicts_least_recently_used_by_entries() -> None:
    cache = MemoryCache(max_entries=3, max_bytes=10**6, ttl=60)
    for name in "abc":
        await cache.set(name, entry(name))
    assert await cache.get("a") is not None  # a is now the most recently used
    await cache.set("d", entry("d"))
    assert len(cache) == 3
    assert await cache.get("b") is None
    assert [await cache.get(k) is not None for k in "acd"] == [True, True, True]


async def test_memory_evicts_by_bytes() -> None:
    cache = MemoryCache(max_entries=100, max_bytes=3000, ttl=60)
    for name in "abcd":
        await cache.set(name, entry(name * 700))  # ~956 bytes each with overhead
    assert cache.size_bytes <= 3000
    assert len(cache) == 3
    assert await cache.get("a") is None
    await cache.set("huge", entry("x" * 5000))
    assert await cache.get("huge") is None  # larger than the whole cache: not stored
    assert len(cache) == 3


async def test_memory_entries_expire_after_ttl() -> None:
    now = [1000.0]
    cache = MemoryCache(max_entries=10, max_bytes=10**6, ttl=60, timer=lambda: now[0])
    await cache.set("a", entry("a"))
    now[0] += 59
    assert await cache.get("a") is not None
    now[0] += 2
    assert await cache.get("a") is None


async def test_memory_counts_the_bytes_of_what_it_holds() -> None:
    now = [1000.0]
    cache = MemoryCache(max_entries=10, max_bytes=4000, ttl=60, timer=lambda: now[0])
    await cache.set("a", entry("a" * 700))
    await cache.set("a", entry("é" * 700))  # replaced: two bytes a character now
    assert cache.size_bytes == 1400 + 256
    now[0] += 30
    await cache.set("b", entry("b" * 700))
    now[0] += 31
    assert await cache.get("a") is None  # expired: its bytes are free again
    assert cache.size_bytes == 700 + 256
    for name in "cde":
        await cache.set(name, entry(name * 700))
    assert cache.size_bytes <= 4000
    assert len(cache) == 4  # b, c, d and e: the expired one took no room
    await cache.clear()
    assert cache.size_bytes == 0


async def test_clear_counts_entries() -> None:
    cache = MemoryCache(max_entries=10, max_bytes=10**6, ttl=60)
    for name in "ab":
        await cache.set(name, entry(name))
    assert await cache.clear() == 2
    assert len(cache) == 0


def test_entry_round_trips_and_ages() -> None:
    original = entry("hello ✓")
    assert CachedGeneration.loads(original.dumps()) == original
    assert original.age() == 0
