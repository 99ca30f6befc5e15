"""The throttle on failed credentials: a client address that sends AUTH_FAILURES wrong API
keys, user tokens, or admin or metrics tokens (default 10 a minute) is answered 429
``too_many_failed_auth`` without its credential being looked at, until the window frees.
Counted in memory, per instance: a guesser spread over instances is slowed on each."""

from __future__ import annotations

import math
import time

from limits import parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from proxy.errors import RateLimited


class AuthFailures:
    def __init__(self, spec: str) -> None:
        self.items = parse_many(spec)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    async def check(self, address: str) -> None:
        """Raise RateLimited while ``address`` has spent its failures."""
        for item in self.items:
            if not await self.limiter.test(item, address):
                stats = await self.limiter.get_window_stats(item, address)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimited(
                    f"too many failed credentials from this address; retry in {wait} s",
                    code="too_many_failed_auth",
                    retry_after=wait,
                )

    async def failed(self, address: str) -> None:
        for item in self.items:
            await self.limiter.hit(item, address)
