"""A circuit breaker for the upstream: after consecutive failures, fail fast for a cool-down,
then let one probe through; its success closes the circuit, its failure re-opens it."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from proxy.errors import UpstreamUnavailable


class CircuitBreaker:
    def __init__(
        self, *, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._probing else "open"

    def retry_after(self) -> int:
        if self._opened_at is None:
            return 0
        left = self._opened_at + self.cooldown - self._clock()
        return max(1, math.ceil(left))

    def admit(self) -> bool:
        """Whether a call may go upstream now; True for the one probe after the cool-down.

        Raises UpstreamUnavailable while the circuit is open. A True from a half-open
        circuit must be followed by ``success``, ``failure`` or ``release``.
        """
        if self._opened_at is None:
            return False
        if not self._probing and self._clock() >= self._opened_at + self.cooldown:
            self._probing = True
            return True
        raise UpstreamUnavailable(
            f"the upstream failed {self._failures} times in a row; the gateway is not calling "
            f"it for {self.cooldown:g} s (circuit open)",
            retry_after=self.retry_after(),
        )

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        if self._probing or self._failures >= self.threshold:
            self._opened_at = self._clock()
        self._probing = False

    def release(self) -> None:
        """The probe ended without a verdict (cancelled): the next call may probe."""
        self._probing = False
