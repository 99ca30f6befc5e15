"""The throttle on failed credentials: a client address that sends AUTH_FAILURES wrong API
keys, user tokens, or admin or metrics tokens (default 10 a minute) is answered 429
``too_many_failed_auth`` without its credential being looked at, until the window frees.
Counted in memory, per instance: a guesser spread over instances is slowed on each."""

from __future__ import annotations

import math

from proxy.errors import RateLimited
from proxy.moving_windows import MovingWindows, parse_limits


class AuthFailures:
    def __init__(self, spec: str) -> None:
        self.windows = MovingWindows(parse_limits(spec))

    async def check(self, address: str) -> None:
        """Raise RateLimited while ``address`` has spent its failures."""
        spent = self.windows.exceeded(address)
        if spent is not None:
            wait = max(1, math.ceil(spent[1]))
            raise RateLimited(
                f"too many failed credentials from this address; retry in {wait} s",
                code="too_many_failed_auth",
                retry_after=wait,
            )

    async def failed(self, address: str) -> None:
        self.windows.add(address)
