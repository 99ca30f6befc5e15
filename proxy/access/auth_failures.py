"""The throttle on failed credentials: a client address that has sent AUTH_FAILURES wrong API
keys, or admin or metrics tokens (default 10 a minute), gets 429 ``too_many_failed_auth``
instead of 401 for each further wrong one, until the window frees. Only failures are
answered so: a right credential is accepted from that address all the same (another client
behind the same router must not be locked out), and signed user tokens, which cannot be
guessed, are not counted. Counted in memory, per instance."""

from __future__ import annotations

import math

from proxy.access.moving_windows import MovingWindows
from proxy.config.values import parse_limits
from proxy.errors import RateLimited


class AuthFailures:
    def __init__(self, spec: str) -> None:
        self.windows = MovingWindows(parse_limits(spec))

    async def refused(self, address: str) -> None:
        """A wrong credential from ``address``: counted, or, while the address has spent its
        failures, answered with RateLimited (the caller raises its 401 otherwise)."""
        spent = self.windows.exceeded(address)
        if spent is not None:
            wait = max(1, math.ceil(spent[1]))
            raise RateLimited(
                f"too many failed credentials from this address; retry in {wait} s",
                code="too_many_failed_auth",
                retry_after=wait,
            )
        self.windows.add(address)
