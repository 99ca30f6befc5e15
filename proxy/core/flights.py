"""In-process single-flight: concurrent calls for one key share a single execution.

The first caller (the leader) runs the work inline, so the common case, with no duplicate in
flight, costs a dict lookup and a future. Followers wait for the leader's outcome, value or
error. If the leader is cancelled (its client went away), one follower takes over instead of
everyone failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _LeaderGone(Exception):
    """The leader was cancelled before it finished; a follower should lead instead."""


class Flights(Generic[T]):
    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        return len(self._running)

    def running(self, key: str) -> bool:
        return key in self._running

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """``work()``'s result, shared with every concurrent call for ``key``, and whether
        this call joined another's instead of running it."""
        while True:
            future = self._running.get(key)
            if future is None:
                return await self._lead(key, work), False
            try:
                return await asyncio.shield(future), True
            except _LeaderGone:
                continue

    async def join(self, key: str) -> T | None:
        """The result of the call for ``key`` in flight, or None when none is (or its
        leader was cancelled)."""
        future = self._running.get(key)
        if future is None:
            return None
        try:
            return await asyncio.shield(future)
        except _LeaderGone:
            return None

    async def _lead(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            result = await work()
        except asyncio.CancelledError:
            future.set_exception(_LeaderGone())
            raise
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._running[key]
            # Mark the outcome as seen even when no follower was waiting for it.
            if not future.cancelled():
                future.exception()
