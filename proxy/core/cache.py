"""The response cache: its key, the request's Cache-Control policy, and two backends.

The key is a SHA-256 of canonical JSON, so no prompt text ever appears in a key, a log line or
a Redis key name. ``MemoryCache`` (cachetools, bounded by entries and bytes, with a TTL) serves
one process; ``RedisCache`` (proxy/core/redis_cache.py, imported only with REDIS_URL) lets several
instances share entries and a single-flight lock.
Backend failures raise ``CacheUnavailable``; the gateway then serves uncached.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import Protocol

import cachetools
import orjson
from msgspec import Struct

from proxy.core.generation import FinishReason, Generation, GenerationRequest

KEY_VERSION = "v1"
# What an entry costs beyond its text in the memory backend: key, object and bookkeeping.
ENTRY_OVERHEAD_BYTES = 256


class CacheUnavailable(Exception):
    """The backend cannot be used right now (Redis down or slow)."""


class CachePolicy(Struct, frozen=True):
    """What one request allows: read an entry (no older than ``max_age``), write one."""

    read: bool = True
    write: bool = True
    max_age: int | None = None

    def allows(self, age: int) -> bool:
        """Whether an entry ``age`` seconds old may be read (``max-age``)."""
        return self.max_age is None or age <= self.max_age


_MAX_AGE = re.compile(r"max-age\s*=\s*\"?(\d+)")


DEFAULT_POLICY = CachePolicy()


def parse_cache_control(header: str) -> CachePolicy:
    """The policy of a request's Cache-Control header (RFC 9111 request directives)."""
    if not header:
        return DEFAULT_POLICY
    value = header.lower()
    if "no-store" in value:
        return CachePolicy(read=False, write=False)
    if "no-cache" in value:
        return CachePolicy(read=False, write=True)
    found = _MAX_AGE.search(value)
    return CachePolicy(max_age=int(found.group(1)) if found else None)


def cache_key(req: GenerationRequest, upstream: str) -> str:
    """SHA-256 of the canonical JSON of what determines a reply.

    Defaults are already filled in and floats rounded by the request normaliser; greedy
    decoding ignores temperature and top_p, so they do not split greedy entries.
    """
    temperature, top_p = (req.temperature, req.top_p) if req.do_sample else (0.0, 1.0)
    material = [
        KEY_VERSION,
        upstream,
        req.model.name,
        req.prompt,
        req.max_new_tokens,
        temperature,
        top_p,
        req.do_sample,
        list(req.stop),
    ]
    if req.top_k is not None or req.repetition_penalty is not None:
        material.append([req.top_k, req.repetition_penalty])
    if req.cache_scope:
        material.append(req.cache_scope)
    return hashlib.sha256(orjson.dumps(material)).hexdigest()


class CachedGeneration(Struct, frozen=True):
    text: str
    model: str
    upstream: str
    finish_reason: FinishReason
    created: float

    @classmethod
    def of(cls, generation: Generation) -> CachedGeneration:
        return cls(
            generation.text,
            generation.model,
            generation.upstream,
            generation.finish_reason,
            time.time(),
        )

    def generation(self) -> Generation:
        return Generation(self.text, self.model, self.upstream, self.finish_reason)

    def age(self) -> int:
        return max(0, int(time.time() - self.created))

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "t": self.text,
                "m": self.model,
                "u": self.upstream,
                "f": self.finish_reason,
                "c": self.created,
            }
        )

    @classmethod
    def loads(cls, raw: bytes) -> CachedGeneration:
        data = orjson.loads(raw)
        return cls(data["t"], data["m"], data["u"], data["f"], data["c"])


class CacheBackend(Protocol):
    """Where entries live. Every method may raise CacheUnavailable."""

    name: str
    shared: bool
    """True when other instances see the same entries (then locks coordinate them)."""

    async def get(self, key: str) -> CachedGeneration | None: ...

    async def set(self, key: str, entry: CachedGeneration) -> None: ...

    async def clear(self) -> int: ...

    async def lock(self, key: str) -> str | None:
        """A token when this caller may generate ``key``; None while another instance is."""
        ...

    async def locked(self, key: str) -> bool: ...

    async def unlock(self, key: str, token: str) -> None: ...

    async def aclose(self) -> None: ...


class SharedCache(CacheBackend, Protocol):
    """A cache that several instances share, and through which they share their streams in
    flight (Redis Streams): the leader publishes each chunk, the followers read them; the
    followers say they are there, so that the leader keeps generating while any listens.
    Every call raises CacheUnavailable."""

    async def publish(self, key: str, fields: dict[bytes, bytes]) -> None: ...

    async def read(
        self, key: str, after: bytes, block: float
    ) -> list[tuple[bytes, dict[bytes, bytes]]]: ...

    async def refresh(self, key: str, token: str) -> None: ...

    async def follow(self, key: str, joined: int) -> None: ...

    async def followed(self, key: str) -> bool: ...


def _entry_size(entry: CachedGeneration) -> int:
    return len(entry.text.encode()) + ENTRY_OVERHEAD_BYTES


class MemoryCache:
    """One process's cache: least recently used out first, bounded by entries and by bytes.

    Each entry keeps its expiry time, checked when it is read: cachetools' LRUCache with that
    check costs a fraction of its TTLCache, which updates a timer and a list on every call.
    """

    name = "memory"
    shared = False

    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        ttl: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_entries = max_entries
        self._ttl = ttl
        self._timer = timer
        self._entries: cachetools.LRUCache[str, tuple[CachedGeneration, float]] = (
            cachetools.LRUCache(maxsize=max_bytes, getsizeof=lambda item: _entry_size(item[0]))
        )

    @property
    def size_bytes(self) -> int:
        return int(self._entries.currsize)

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CachedGeneration | None:
        return self.peek(key)

    def peek(self, key: str) -> CachedGeneration | None:
        """``get`` without an await: an in-process read has nothing to wait for."""
        item = self._entries.get(key)
        if item is None:
            return None
        if self._timer() >= item[1]:
            del self._entries[key]
            return None
        return item[0]

    def usable(self, key: str, policy: CachePolicy) -> tuple[CachedGeneration, int] | None:
        """``key``'s entry and its age, when ``policy`` may read and fill the cache and
        accepts that age; else None."""
        if not (policy.read and policy.write) or (entry := self.peek(key)) is None:
            return None
        age = entry.age()
        return (entry, age) if policy.allows(age) else None

    async def set(self, key: str, entry: CachedGeneration) -> None:
        if _entry_size(entry) > self._entries.maxsize:
            return  # larger than the whole cache: never stored
        self._entries.pop(key, None)
        while len(self._entries) >= self._max_entries:
            self._entries.popitem()  # least recently used first
        self._entries[key] = (entry, self._timer() + self._ttl)

    async def clear(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        return count

    # Within one process the gateway's own single-flight already coalesces calls.
    async def lock(self, key: str) -> str | None:
        return "local"

    async def locked(self, key: str) -> bool:
        return False

    async def unlock(self, key: str, token: str) -> None:
        return None

    async def aclose(self) -> None:
        return None


# Delete the lock only if it is still ours: a lock that expired and was taken by another
# instance must not be released by the first holder.
