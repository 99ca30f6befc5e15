"""A JSON generation shared across instances: the leader keeps its lock, the others wait.

The instance whose lock on a cache key won generates the entry; the lock's time to live is
``CACHE_LOCK_TIMEOUT``, and the leader renews it while its generation goes on, however long
that takes. The other instances wait for the entry as long as the lock is held (at most the
generation's own bound), so a slow generation is made once; when the leader dies, its lock
lapses within its time to live, and they generate it themselves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from proxy.core.cache import CacheBackend, CachedGeneration, CacheUnavailable, SharedCache
from proxy.core.shared_flights import RENEW_EVERY

# How often an instance waiting for another one's identical generation looks for it.
LOCK_POLL_INTERVAL = 0.05


@asynccontextmanager
async def lock_kept(
    cache: SharedCache,
    key: str,
    token: str,
    *,
    ttl: float,
    on_failure: Callable[[CacheUnavailable], None],
) -> AsyncIterator[None]:
    """While the block runs, the lock on ``key`` stays this instance's: renewed every
    RENEW_EVERY, or a third of its time to live when that is shorter. A renewal that fails
    (Redis gone) is reported and not tried again: the lock lapses, and the waiters proceed."""
    every = min(RENEW_EVERY, ttl / 3)

    async def renew() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await cache.refresh(key, token)
            except CacheUnavailable as exc:
                on_failure(exc)
                return

    keeper = asyncio.get_running_loop().create_task(renew())
    try:
        yield
    finally:
        keeper.cancel()


async def entry_of_other(
    cache: CacheBackend, key: str, *, timeout: float
) -> CachedGeneration | None:
    """Wait while another instance holds the lock on ``key``: its entry, or None when the
    lock is gone without one (that instance failed or died) or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(LOCK_POLL_INTERVAL)
        entry = await cache.get(key)
        if entry is not None:
            return entry
        if not await cache.locked(key):
            return None
    return None
