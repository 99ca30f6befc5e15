"""Moving windows in memory: at most N events per key in any window of the limit's length.
What RATE_LIMIT and AUTH_FAILURES count per instance.

The ``limits`` library's memory storage counts the same windows through asyncio locks, an
expiry task and a list it inserts at the front of, so its cost per request grows with the
count in the window (with a limit high enough never to refuse, a hit spent most of its time
there). A deque per key and limit costs O(1) per event. ``limits`` still counts the windows
shared through Redis (``shared_windows.py``), with the same specs and the same meaning.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

from msgspec import Struct

from proxy.config.values import Limit


class Count(Struct, frozen=True):
    """One event counted against every limit: the limit it exceeded (None: admitted), the
    limit to show (the exceeded one, else the one with the least share left), what is left
    of it and the seconds until its window frees a place."""

    exceeded: Limit | None
    shown: Limit
    remaining: int
    reset: float


def least_left(counts: list[tuple[Limit, int]]) -> int:
    """The index of the (limit, remaining) pair with the least share of its limit left; the
    first on a tie. It is the limit the RateLimit headers show."""
    best = 0
    for index, (limit, remaining) in enumerate(counts):
        shown, left = counts[best]
        if remaining * shown.amount < left * limit.amount:
            best = index
    return best


# The most keys tracked at once: past it the least recently seen is forgotten (its windows
# start afresh), so rotating identities cannot grow memory without bound.
MAX_KEYS = 50_000


class MovingWindows:
    """Counts events per key against ``limits``, in this process, for at most ``max_keys``
    keys at once (least recently seen dropped first)."""

    def __init__(
        self,
        limits: list[Limit],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ):
        self.limits = limits
        self._clock = clock
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._max_keys = max_keys
        self._events: list[dict[str, deque[float]]] = [{} for _ in limits]
        self._longest = max(limit.seconds for limit in limits)
        self._sweep_at = clock() + self._longest

    def _touch(self, key: str) -> None:
        """``key`` was just seen; the least recently seen is forgotten past ``max_keys``."""
        seen = self._seen
        if key in seen:
            seen.move_to_end(key)
            return
        seen[key] = None
        if len(seen) > self._max_keys:
            oldest, _ = seen.popitem(last=False)
            for keyed in self._events:
                keyed.pop(oldest, None)

    def _window(self, index: int, key: str, now: float) -> deque[float]:
        """``key``'s events within limit ``index``'s window, oldest first."""
        events = self._events[index].get(key)
        if events is None:
            events = self._events[index][key] = deque()
        start = now - self.limits[index].seconds
        while events and events[0] <= start:
            events.popleft()
        return events

    def _sweep(self, now: float) -> None:
        """Forget keys with no event in any window (memory stays bounded by active keys)."""
        self._sweep_at = now + self._longest
        for index, keyed in enumerate(self._events):
            start = now - self.limits[index].seconds
            for key in [k for k, events in keyed.items() if not events or events[-1] <= start]:
                del keyed[key]
        self._seen = OrderedDict(
            (key, None) for key in self._seen if any(key in keyed for keyed in self._events)
        )

    def hit(self, key: str) -> Count:
        """Count one event of ``key`` against each limit in turn, up to the first it
        exceeds (as ``limits`` does: the earlier ones count it)."""
        now = self._clock()
        if now >= self._sweep_at:
            self._sweep(now)
        self._touch(key)
        if len(self.limits) == 1:  # the usual RATE_LIMIT: the same count in fewer steps
            limit = self.limits[0]
            events = self._window(0, key, now)
            if len(events) >= limit.amount:
                return Count(limit, limit, 0, events[0] + limit.seconds - now)
            events.append(now)
            return Count(None, limit, limit.amount - len(events), events[0] + limit.seconds - now)
        exceeded = None
        windows = []
        for index, limit in enumerate(self.limits):
            events = self._window(index, key, now)
            if len(events) >= limit.amount:
                exceeded = limit
                windows = [(limit, events)]
                break
            events.append(now)
            windows.append((limit, events))
        shown, events = windows[least_left([(lim, lim.amount - len(e)) for lim, e in windows])]
        reset = events[0] + shown.seconds - now if events else 0.0
        return Count(exceeded, shown, max(0, shown.amount - len(events)), reset)

    def exceeded(self, key: str) -> tuple[Limit, float] | None:
        """The limit ``key`` has spent and the seconds until it frees a place, or None;
        counts nothing."""
        now = self._clock()
        for index, limit in enumerate(self.limits):
            events = self._events[index].get(key)
            if events is None:
                continue
            events = self._window(index, key, now)
            if len(events) >= limit.amount:
                return limit, events[0] + limit.seconds - now
        return None

    def add(self, key: str) -> None:
        """Count one event of ``key`` against every limit it has not spent."""
        now = self._clock()
        if now >= self._sweep_at:
            self._sweep(now)
        self._touch(key)
        for index, limit in enumerate(self.limits):
            events = self._window(index, key, now)
            if len(events) < limit.amount:
                events.append(now)
