"""The Redis cache backend: entries, a single-flight lock and the streams in flight, shared by
every instance.

A stream in flight is a Redis Stream (``XADD`` by its leader, bounded in length and expiring;
``XREAD BLOCK`` by the followers, on a client of its own whose socket may wait that long),
which keeps what was sent before a follower arrived, as pub/sub would not.

Its own module so that ``redis`` is imported only when REDIS_URL is set (a serverless cold
start in test mode does not pay for it).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from proxy.core.cache import KEY_VERSION, CachedGeneration, CacheUnavailable

_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_REFRESH = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
# A stream in flight keeps at most this many entries (a reply is bounded far below it) and
# expires this long after its last entry; a follower's presence this long after its last
# word (it renews it every second while it follows).
FLIGHT_MAX_ENTRIES = 10_000
FLIGHT_TTL_MS = 60_000
FOLLOWER_TTL_MS = 3_000


class RedisCache:
    """Entries and single-flight locks in Redis, shared by every instance using ``url``.

    Calls fail fast (short socket timeouts, no retries). After a failure the backend is
    skipped for ``cooldown`` seconds, so a dead Redis costs requests nothing; then it is
    tried again, which is how the gateway recovers by itself.
    """

    name = "redis"
    shared = True

    def __init__(
        self,
        url: str,
        *,
        ttl: float,
        lock_ttl: float,
        prefix: str = "proxy",
        timeout: float = 0.25,
        cooldown: float = 1.0,
    ) -> None:
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._ttl_ms = max(1, int(ttl * 1000))
        self._lock_ttl_ms = max(1, int(lock_ttl * 1000))
        self._prefix = f"{prefix}:{KEY_VERSION}"
        self._cooldown = cooldown
        self._down_until = 0.0
        self._unlock = self._client.register_script(_UNLOCK)
        self._refresh = self._client.register_script(_REFRESH)
        self._url = url
        self._timeout = timeout
        self._blocking: redis.Redis | None = None  # for XREAD BLOCK, made by the first read

    def _entry_key(self, key: str) -> str:
        return f"{self._prefix}:cache:{key}"

    def _lock_key(self, key: str) -> str:
        return f"{self._prefix}:lock:{key}"

    def _check(self) -> None:
        if time.monotonic() < self._down_until:
            raise CacheUnavailable("redis is in its cool-down after a failure")

    def _failed(self, exc: Exception) -> CacheUnavailable:
        self._down_until = time.monotonic() + self._cooldown
        return CacheUnavailable(f"redis: {type(exc).__name__}")

    async def get(self, key: str) -> CachedGeneration | None:
        self._check()
        try:
            raw = await self._client.get(self._entry_key(key))
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from None
        if raw is None:
            return None
        try:
            return CachedGeneration.loads(raw.encode() if isinstance(raw, str) else raw)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None  # written by an incompatible version: a miss

    async def set(self, key: str, entry: CachedGeneration) -> None:
        self._check()
        try:
            await self._client.set(self._entry_key(key), entry.dumps(), px=self._ttl_ms)
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from None

    async def clear(self) -> int:
        self._check()
        count = 0
        try:
            batch: list[bytes] = []
            async for name in self._client.scan_iter(match=f"{self._prefix}:cache:*", count=500):
                batch.append(name)
                if len(batch) >= 500:
                    count += int(await self._client.unlink(*batch))
                    batch.clear()
            if batch:
                count += int(await self._client.unlink(*batch))
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from None
        return count

    async def lock(self, key: str) -> str | None:
        self._check()
        token = uuid.uuid4().hex
        try:
            got = await self._client.set(self._lock_key(key), token, nx=True, px=self._lock_ttl_ms)
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from None
        return token if got else None

    async def locked(self, key: str) -> bool:
        self._check()
        try:
            return bool(await self._client.exists(self._lock_key(key)))
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from None

    async def unlock(self, key: str, token: str) -> None:
        try:
            await self._unlock(keys=[self._lock_key(key)], args=[token])
        except (RedisError, OSError):
            pass  # it expires by itself

    def _flight_key(self, key: str) -> str:
        return f"{self._prefix}:flight:{key}"

    def _followers_key(self, key: str) -> str:
        return f"{self._prefix}:followers:{key}"

    async def publish(self, key: str, fields: dict[bytes, bytes]) -> None:
        self._check()
        name = self._flight_key(key)
        entry: Any = fields  # redis-py's type for it is a dict of a union of keys
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xadd(name, entry, maxlen=FLIGHT_MAX_ENTRIES, approximate=True)
                pipe.pexpire(name, FLIGHT_TTL_MS)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from None

    async def read(
        self, key: str, after: bytes, block: float
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The entries after ``after``, waiting up to ``block`` seconds for one."""
        self._check()
        if self._blocking is None:
            self._blocking = redis.Redis.from_url(
                self._url,
                socket_timeout=self._timeout + block,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), 0),
            )
        try:
            found: Any = await self._blocking.xread(
                {self._flight_key(key): after}, count=1000, block=max(1, int(block * 1000))
            )
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from None
        streams: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] = found or []
        return [entry for _, entries in streams for entry in entries]

    async def refresh(self, key: str, token: str) -> None:
        """Keep the lock on ``key`` while its generation goes on (it is still ours)."""
        self._check()
        try:
            await self._refresh(keys=[self._lock_key(key)], args=[token, self._lock_ttl_ms])
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from None

    async def follow(self, key: str, joined: int) -> None:
        """``joined`` is 1 when a follower begins, 0 while it goes on, -1 when it leaves."""
        self._check()
        name = self._followers_key(key)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                if joined:
                    pipe.incrby(name, joined)
                pipe.pexpire(name, FOLLOWER_TTL_MS)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from None

    async def followed(self, key: str) -> bool:
        """Whether a follower on another instance still reads the flight of ``key``."""
        self._check()
        try:
            count = await self._client.get(self._followers_key(key))
        except (RedisError, OSError) as exc:
            raise self._failed(exc) from None
        return count is not None and int(count) > 0

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._blocking is not None:
            await self._blocking.aclose()
