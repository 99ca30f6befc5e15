"""The response cache: its key, the request's Cache-Control policy, and two backends.

The key is a SHA-256 of canonical JSON, so no prompt text ever appears in a key, a log line or
a Redis key name. ``MemoryCache`` (least recently used out first, bounded by entries and
bytes, with a TTL) serves one process; ``RedisCache`` (proxy/core/redis_cache.py, imported
only with REDIS_URL) lets several instances share entries and a single-flight lock.
Backend failures raise ``CacheUnavailable``; the gateway then serves uncached.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple, Protocol

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
    text = entry.text
    return (len(text) if text.isascii() else len(text.encode())) + ENTRY_OVERHEAD_BYTES


class _Slot(NamedTuple):
    entry: CachedGeneration
    expires: float
    size: int


class MemoryCache:
    """One process's cache: least recently used out first, bounded by entries and by bytes.

    An ``OrderedDict`` keeps the order of use; each slot keeps its entry's expiry time,
    checked when it is read, and its size.
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
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._timer = timer
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        self._bytes = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._slots)

    async def get(self, key: str) -> CachedGeneration | None:
        return self.peek(key)

    def peek(self, key: str) -> CachedGeneration | None:
        """``get`` without an await: an in-process read has nothing to wait for."""
        slot = self._slots.get(key)
        if slot is None:
            return None
        if self._timer() >= slot.expires:
            del self._slots[key]
            self._bytes -= slot.size
            return None
        self._slots.move_to_end(key)
        return slot.entry

    def usable(self, key: str, policy: CachePolicy) -> tuple[CachedGeneration, int] | None:
        """``key``'s entry and its age, when ``policy`` may read and fill the cache and
        accepts that age; else None."""
        if not (policy.read and policy.write) or (entry := self.peek(key)) is None:
            return None
        age = entry.age()
        return (entry, age) if policy.allows(age) else None

    async def set(self, key: str, entry: CachedGeneration) -> None:
        size = _entry_size(entry)
        if size > self._max_bytes:
            return  # larger than the whole cache: never stored
        slots = self._slots
        old = slots.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        while slots and (len(slots) >= self._max_entries or self._bytes + size > self._max_bytes):
            self._bytes -= slots.popitem(last=False)[1].size  # least recently used first
        slots[key] = _Slot(entry, self._timer() + self._ttl, size)
        self._bytes += size

    async def clear(self) -> int:
        count = len(self._slots)
        self._slots.clear()
        self._bytes = 0
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
