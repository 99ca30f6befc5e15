"""Per-client rate limits: the moving windows of RATE_LIMIT, counted in this process
(``moving_windows``) or in Redis shared by every instance (``shared_windows``, which ``app.py``
builds), with a per-instance fallback while the shared store is down."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

from proxy.access.moving_windows import Count, MovingWindows
from proxy.config.values import Limit, parse_limits
from proxy.errors import RateLimited
from proxy.observe.metrics import Metrics

if TYPE_CHECKING:
    from proxy.access.shared_windows import SharedWindows

logger = logging.getLogger("proxy.guard")

# Rate-limit trouble (Redis down) is logged at most this often.
WARN_INTERVAL = 30.0
SHARED_RETRY_AFTER = 1.0

Headers = list[tuple[bytes, bytes]]


class RateLimits:
    """Counts requests per client against every limit of ``spec`` (``"60/minute;1000/day"``).

    With ``shared`` windows, limits hold per instance while their store is down, and the
    store is left alone for a moment instead of costing every request its timeout.
    """

    def __init__(self, spec: str, shared: SharedWindows | None = None, *, metrics: Metrics) -> None:
        self.local = MovingWindows(parse_limits(spec))
        self.shared = shared
        self.metrics = metrics
        self._shared_down_until = 0.0
        self._warned_at = -WARN_INTERVAL
        self._fixed: dict[Limit, tuple[tuple[bytes, bytes], tuple[bytes, bytes]]] = {}

    async def _count(self, client: str) -> Count:
        if self.shared is None or time.monotonic() < self._shared_down_until:
            return self.local.hit(client)
        try:
            return await self.shared.hit(client)
        except Exception as exc:  # the shared store is down: limit per instance meanwhile
            now = time.monotonic()
            self._shared_down_until = now + SHARED_RETRY_AFTER
            if now - self._warned_at >= WARN_INTERVAL:
                self._warned_at = now
                logger.warning("shared rate limits unavailable, limiting per instance: %s", exc)
            return self.local.hit(client)

    async def hit(self, client: str) -> Headers:
        """Count one request of ``client``: its RateLimit headers, or RateLimited."""
        count = self.local.hit(client) if self.shared is None else await self._count(client)
        limit = count.shown
        reset = max(0, math.ceil(count.reset))
        fixed = self._fixed.get(limit)
        if fixed is None:  # what a limit always says, made once
            fixed = self._fixed[limit] = (
                (b"ratelimit-limit", b"%d" % limit.amount),
                (b"ratelimit-policy", b"%d;w=%d" % (limit.amount, limit.seconds)),
            )
        headers = [
            fixed[0],
            (b"ratelimit-remaining", b"%d" % count.remaining),
            (b"ratelimit-reset", b"%d" % reset),
            fixed[1],
        ]
        if count.exceeded is not None:
            self.metrics.rate_limited.inc()
            raise RateLimited(
                f"rate limit reached ({limit.amount} per {limit.window}); retry in "
                f"{max(1, reset)} s",
                retry_after=max(1, reset),
                headers={k.decode(): v.decode() for k, v in headers},
            )
        return headers
