"""The Redis cache backend: entries and a single-flight lock shared by every instance.

Its own module so that ``redis`` is imported only when REDIS_URL is set (a serverless cold
start in test mode does not pay for it).
"""

from __future__ import annotations

import time
import uuid

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

    async def aclose(self) -> None:
        await self._client.aclose()
