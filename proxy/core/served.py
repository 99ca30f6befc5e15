"""What the gateway answers a request with: a reply, or its chunks, and where it came from."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Literal

from msgspec import Struct

from proxy.core.cache import CachedGeneration
from proxy.core.generation import Chunk, Generation

# JOINED: served by an identical generation already in flight (here or on another instance).
CacheStatus = Literal["HIT", "MISS", "BYPASS", "JOINED"]


class Served(Struct, frozen=True):
    """A reply and where it came from (for a hit of the in-process cache, its entry)."""

    generation: Generation
    cache: CacheStatus
    age: int | None = None
    entry: CachedGeneration | None = None


class ServedStream(Struct):
    """A reply as chunks, and where it comes from (known before the first chunk)."""

    chunks: AsyncGenerator[Chunk, None]
    cache: CacheStatus
    age: int | None = None
    upstream: str = ""
