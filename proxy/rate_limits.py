"""Per-client rate limits: the moving windows of RATE_LIMITS, counted in a storage that
``app.py`` builds (memory, or Redis shared by every instance), with a per-instance fallback
while the shared store is down."""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, WindowStats, parse_many
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from proxy.errors import RateLimited
from proxy.metrics import Metrics

logger = logging.getLogger("proxy.guard")

# Rate-limit trouble (Redis down) is logged at most this often.
WARN_INTERVAL = 30.0
SHARED_RETRY_AFTER = 1.0

Headers = list[tuple[bytes, bytes]]


class RateLimits:
    """Counts requests per client against every limit of ``spec`` (``"60/minute;1000/day"``).

    With a ``shared`` store, limits hold per instance while it is down, and the store is left
    alone for a moment instead of costing every request its timeout.
    """

    def __init__(self, spec: str, storage: Storage, *, metrics: Metrics, shared: bool) -> None:
        self.items: list[RateLimitItem] = parse_many(spec)
        self.metrics = metrics
        self.limiter = MovingWindowRateLimiter(storage)
        self.local = MovingWindowRateLimiter(MemoryStorage()) if shared else None
        self._shared_down_until = 0.0
        self._warned_at = -WARN_INTERVAL

    async def _count(
        self, limiter: MovingWindowRateLimiter, client: str
    ) -> tuple[RateLimitItem | None, RateLimitItem, WindowStats]:
        """Hit every limit for ``client``: (the exhausted limit or None, the limit to show,
        its window). Shown is the exhausted one, else the one with the least share left."""
        failed = None
        for item in self.items:
            if not await limiter.hit(item, client):
                failed = item
                break
        shown: tuple[RateLimitItem, WindowStats] | None = None
        for item in [failed] if failed else self.items:
            stats = await limiter.get_window_stats(item, client)
            if shown is None or stats.remaining * shown[0].amount < (
                shown[1].remaining * item.amount
            ):
                shown = (item, stats)
        assert shown is not None
        return failed, shown[0], shown[1]

    async def hit(self, client: str) -> Headers:
        """Count one request of ``client``: its RateLimit headers, or RateLimited."""
        limiter = self.limiter
        if self.local is not None and time.monotonic() < self._shared_down_until:
            limiter = self.local
        try:
            failed, item, stats = await self._count(limiter, client)
        except Exception as exc:  # the shared store is down: limit per instance meanwhile
            now = time.monotonic()
            self._shared_down_until = now + SHARED_RETRY_AFTER
            if now - self._warned_at >= WARN_INTERVAL:
                self._warned_at = now
                logger.warning("shared rate limits unavailable, limiting per instance: %s", exc)
            if self.local is None:
                return []
            failed, item, stats = await self._count(self.local, client)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        headers = [
            (b"ratelimit-limit", str(item.amount).encode()),
            (b"ratelimit-remaining", str(stats.remaining).encode()),
            (b"ratelimit-reset", str(reset).encode()),
            (b"ratelimit-policy", f"{item.amount};w={item.get_expiry()}".encode()),
        ]
        if failed is not None:
            self.metrics.rate_limited.inc()
            raise RateLimited(
                f"rate limit reached ({item.amount} per {_window(item)}); retry in "
                f"{max(1, reset)} s",
                retry_after=max(1, reset),
                headers={k.decode(): v.decode() for k, v in headers},
            )
        return headers


def _window(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return f"{item.multiples} {unit}s" if item.multiples > 1 else unit
