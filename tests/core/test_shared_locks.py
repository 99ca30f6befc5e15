"""The leader's lock kept while its JSON generation runs (``shared_locks.lock_kept``)."""

from __future__ import annotations

import asyncio

from proxy.core.cache import CacheUnavailable
from proxy.core.shared_locks import lock_kept
from tests.support.servers import wait_for


class Renewals:
    """The part of a shared cache ``lock_kept`` uses: it counts renewals, and fails them when
    told to, as a Redis that went away would."""

    def __init__(self, *, failing: bool = False) -> None:
        self.renewed: list[tuple[str, str]] = []
        self.failing = failing

    async def refresh(self, key: str, token: str) -> None:
        if self.failing:
            raise CacheUnavailable("redis is gone")
        self.renewed.append((key, token))


async def test_the_lock_is_renewed_while_the_block_runs_and_no_longer_after() -> None:
    cache = Renewals()
    failures: list[CacheUnavailable] = []
    async with lock_kept(cache, "k", "t", ttl=0.3, on_failure=failures.append):  # type: ignore[arg-type]
        await wait_for(lambda: len(cache.renewed) >= 2, timeout=5, what="two renewals")
    after = len(cache.renewed)
    await asyncio.sleep(0.35)  # more than three renewal periods
    assert len(cache.renewed) == after
    assert set(cache.renewed) == {("k", "t")} and not failures


async def test_a_renewal_that_fails_is_reported_once_and_not_retried() -> None:
    cache = Renewals(failing=True)
    failures: list[CacheUnavailable] = []
    async with lock_kept(cache, "k", "t", ttl=0.3, on_failure=failures.append):  # type: ignore[arg-type]
        await wait_for(lambda: failures, timeout=5, what="the failed renewal")
        cache.failing = False
        await asyncio.sleep(0.35)  # more than three renewal periods
    assert len(failures) == 1 and cache.renewed == []
