"""In-process single-flight: concurrent calls for one key share a single execution.

The first caller (the leader) runs the work inline, so the common case, with no duplicate in
flight, costs a dict entry: the future that followers wait on is made by the first follower.
Followers wait for the leader's outcome, value or error. If the leader is cancelled (its
client went away), one follower takes over instead of everyone failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _LeaderGone(Exception):
    """The leader was cancelled before it finished; a follower should lead instead."""


class _Flight(Generic[T]):
    """One key's call in flight: the future of its outcome, once a follower waits for it."""

    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[T] | None = None

    def outcome(self) -> asyncio.Future[T]:
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
        return self._future

    def succeeded(self, result: T) -> None:
        future = self._future
        if future is not None and not future.cancelled():
            future.set_result(result)

    def failed(self, error: BaseException) -> None:
        future = self._future
        if future is not None and not future.cancelled():
            future.set_exception(error)
            future.exception()  # seen, even when no follower is left to see it


class Flights(Generic[T]):
    def __init__(self) -> None:
        self._running: dict[str, _Flight[T]] = {}

    def __len__(self) -> int:
        return len(self._running)

    def running(self, key: str) -> bool:
        return key in self._running

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """``work()``'s result, shared with every concurrent call for ``key``, and whether
        this call joined another's instead of running it."""
        while True:
            flight = self._running.get(key)
            if flight is None:
                return await self._lead(key, work), False
            try:
                return await asyncio.shield(flight.outcome()), True
            except _LeaderGone:
                continue

    async def join(self, key: str) -> T | None:
        """The result of the call for ``key`` in flight, or None when none is (or its
        leader was cancelled)."""
        flight = self._running.get(key)
        if flight is None:
            return None
        try:
            return await asyncio.shield(flight.outcome())
        except _LeaderGone:
            return None

    async def _lead(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        flight: _Flight[T] = _Flight()
        self._running[key] = flight
        try:
            result = await work()
        except asyncio.CancelledError:
            flight.failed(_LeaderGone())
            raise
        except BaseException as exc:
            flight.failed(exc)
            raise
        else:
            flight.succeeded(result)
            return result
        finally:
            del self._running[key]
