"""Retries before output: a failure before the upstream produced anything is tried again,
after the upstream's own Retry-After when it is short enough, else with back-off and jitter,
within the call's deadline."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.errors import GatewayError

T = TypeVar("T")


class BeforeOutput(Exception):
    """Wraps a failure that happened before the upstream produced anything (connect error,
    a 503 to the submitting request, a reset before the answer): safe to retry."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


WAIT_INITIAL = 0.1
WAIT_MAX = 2.0
WAIT_JITTER = 0.2
RETRY_AFTER_MAX = 5.0


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    *,
    retries: int,
    deadline: float,
    retry_after_max: float = RETRY_AFTER_MAX,
    give_up_on: tuple[type[GatewayError], ...] = (),
) -> T:
    """``attempt()``, retried while it fails before any output (it raises BeforeOutput) and
    time is left before ``deadline`` (loop time): after the upstream's own Retry-After when it
    gave one, at most ``retry_after_max`` seconds (a longer wait is answered at once, with the
    header), else with exponential backoff and jitter. The last failure is raised as its
    GatewayError.

    The first attempt runs bare: a stamina retry context is dozens of objects in reference
    cycles, and building one per call made the garbage collector a tenth of the gateway's
    time (and its p99). Only a failed first attempt pays for the retry machinery, and for
    importing it: stamina and tenacity take 10 ms to import, a tenth of a cold start with an
    upstream.
    """

    def wait_for(exc: Exception) -> bool | float:
        """stamina's hook: False (give up), True (its backoff) or the seconds to wait."""
        if not isinstance(exc, BeforeOutput) or isinstance(exc.error, give_up_on):
            return False
        wait = exc.error.upstream_wait
        if wait is None:
            return True
        if wait > retry_after_max or loop.time() + wait >= deadline:
            return False
        return max(wait, 0.001)

    try:
        return await attempt()
    except BeforeOutput as exc:
        first_failure = exc
    # Asked for once the first attempt failed: on Python 3.11 asking makes a system call.
    loop = asyncio.get_running_loop()
    # stamina's first backoff, then its loop continues the sequence (doubling from here).
    verdict = wait_for(first_failure)
    pause = WAIT_INITIAL + random.uniform(0, WAIT_JITTER) if verdict is True else verdict
    if retries < 1 or verdict is False or loop.time() + pause >= deadline:
        raise first_failure.error from None
    await asyncio.sleep(pause)
    import stamina  # here, not at the top: see the docstring

    try:
        async for trying in stamina.retry_context(
            on=wait_for,
            attempts=retries,
            timeout=max(deadline - loop.time(), 0.001),
            wait_initial=WAIT_INITIAL * 2,
            wait_max=WAIT_MAX,
            wait_jitter=WAIT_JITTER,
        ):
            with trying:
                return await attempt()
    except BeforeOutput as exc:
        raise exc.error from None
    raise AssertionError("stamina either returns or raises")  # pragma: no cover


def before_output(translated: GatewayError) -> Exception:
    """``translated``, marked for a retry when it is a failure before output that another
    attempt may cure (its class says so), else itself."""
    return BeforeOutput(translated) if translated.retry_before_output else translated
