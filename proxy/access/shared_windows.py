"""Moving windows shared by every instance through Redis, counted by the ``limits`` library
(imported only when REDIS_URL is set). Same specs and meaning as ``moving_windows``."""

from __future__ import annotations

import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter

from proxy.access.moving_windows import Count, least_left
from proxy.config.values import Limit


def _limit(item: RateLimitItem) -> Limit:
    return Limit(item.amount, item.multiples, item.GRANULARITY.name)


class SharedWindows:
    def __init__(self, spec: str, storage: Storage) -> None:
        self.items = parse_many(spec)
        self.limiter = MovingWindowRateLimiter(storage)

    async def hit(self, key: str) -> Count:
        """As ``MovingWindows.hit``; raises whatever the store raises when it is down."""
        exceeded = None
        for item in self.items:
            if not await self.limiter.hit(item, key):
                exceeded = item
                break
        items = [exceeded] if exceeded else self.items
        windows = [await self.limiter.get_window_stats(item, key) for item in items]
        index = least_left([(_limit(i), w.remaining) for i, w in zip(items, windows, strict=True)])
        item, stats = items[index], windows[index]
        return Count(
            _limit(exceeded) if exceeded else None,
            _limit(item),
            stats.remaining,
            stats.reset_time - time.time(),
        )
