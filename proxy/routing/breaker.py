"""A circuit breaker for one upstream and model: after consecutive failures, fail fast for a
cool-down, then let one probe through; its success closes the circuit. A failed probe does not
start a whole cool-down again: the next probe goes after ``probe_interval``, so traffic is
served again within that interval of the upstream's recovery, not a cool-down later."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from proxy.errors import UpstreamUnavailable


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int,
        cooldown: float,
        probe_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.cooldown = cooldown
        self.probe_interval = cooldown if probe_interval is None else probe_interval
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probe_at = 0.0  # when the open circuit lets its next probe through
        self._probing = False

    def fresh(self) -> CircuitBreaker:
        """A closed breaker with this one's settings."""
        return CircuitBreaker(
            failures=self.threshold,
            cooldown=self.cooldown,
            probe_interval=self.probe_interval,
            clock=self._clock,
        )

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._probing else "open"

    def blocked(self) -> bool:
        """Whether ``admit`` would refuse now (open, and no probe may go yet)."""
        if self._opened_at is None:
            return False
        return self._probing or self._clock() < self._probe_at

    def retry_after(self) -> int:
        if self._opened_at is None:
            return 0
        return max(1, math.ceil(self._probe_at - self._clock()))

    def admit(self) -> bool:
        """Whether a call may go upstream now; True for the one probe after the cool-down.

        Raises UpstreamUnavailable while the circuit is open. A True from a half-open
        circuit must be followed by ``success``, ``failure`` or ``release``.
        """
        if self._opened_at is None:
            return False
        if not self._probing and self._clock() >= self._probe_at:
            self._probing = True
            return True
        raise UpstreamUnavailable(
            f"the upstream failed {self._failures} times in a row; the gateway is not calling "
            f"it for {self.retry_after()} s (circuit open)",
            retry_after=self.retry_after(),
        )

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self._failures += 1
        now = self._clock()
        if self._probing:  # still down: probe again soon
            self._probe_at = now + self.probe_interval
        elif self._opened_at is None and self._failures >= self.threshold:
            self._opened_at = now
            self._probe_at = now + self.cooldown
        self._probing = False

    def release(self) -> None:
        """The probe ended without a verdict (cancelled): the next call may probe."""
        self._probing = False
