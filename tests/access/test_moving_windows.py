"""The in-memory moving windows behind RATE_LIMIT and AUTH_FAILURES: the ``limits`` grammar,
at most N in any window, what the headers show, and memory that forgets idle keys."""

from __future__ import annotations

import pytest

from proxy.access.moving_windows import MovingWindows
from proxy.config.values import Limit, parse_limits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("spec", "limits"),
    [
        ("60/minute", [Limit(60, 1, "minute")]),
        ("60/minute;1000/day", [Limit(60, 1, "minute"), Limit(1000, 1, "day")]),
        ("10 per 2 hours, 5/second", [Limit(10, 2, "hour"), Limit(5, 1, "second")]),
        ("3/Minutes|1/year", [Limit(3, 1, "minute"), Limit(1, 1, "year")]),
    ],
)
def test_the_limits_grammar(spec: str, limits: list[Limit]) -> None:
    assert parse_limits(spec) == limits


@pytest.mark.parametrize("spec", ["", "60", "60/fortnight", "0/minute", "5/0 minutes", "x/day"])
def test_what_is_not_a_limit(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_limits(spec)


def test_at_most_n_in_any_window_not_per_calendar_minute() -> None:
    clock = Clock()
    windows = MovingWindows(parse_limits("3/minute"), clock=clock)
    counts = [windows.hit("a") for _ in range(3)]
    assert [c.remaining for c in counts] == [2, 1, 0]
    assert all(c.exceeded is None for c in counts)
    clock.now += 59.9
    refused = windows.hit("a")
    assert refused.exceeded == Limit(3, 1, "minute")
    assert refused.reset == pytest.approx(0.1)
    clock.now += 0.1  # the first three leave the window together
    assert windows.hit("a").remaining == 2
    assert windows.hit("b").remaining == 2  # keys are counted apart


def test_one_limit_counts_as_it_does_beside_a_limit_that_never_binds() -> None:
    # One limit takes a shorter path; a second limit that never binds takes the general one.
    clock = Clock()
    one = MovingWindows(parse_limits("3/second"), clock=clock)
    two = MovingWindows(parse_limits("3/second;1000000/year"), clock=clock)
    for step in (0.0, 0.2, 0.2, 0.3, 0.1, 0.5, 1.2, 0.0, 0.0, 0.0, 0.9, 0.05):
        clock.now += step
        alone, beside = one.hit("a"), two.hit("a")
        assert (alone.exceeded, alone.shown, alone.remaining) == (
            beside.exceeded,
            beside.shown,
            beside.remaining,
        )
        assert alone.reset == pytest.approx(beside.reset)


def test_the_header_shows_the_limit_with_the_least_share_left() -> None:
    clock = Clock()
    windows = MovingWindows(parse_limits("10/minute;12/day"), clock=clock)
    for _ in range(9):
        windows.hit("a")
    count = windows.hit("a")  # 0 of 10 a minute left against 2 of 12 a day
    assert (count.shown.window, count.remaining) == ("minute", 0)
    clock.now += 60
    count = windows.hit("a")  # 9 of 10 a minute against 1 of 12 a day
    assert (count.shown.window, count.remaining, count.reset) == ("day", 1, 86400 - 60)
    windows.hit("a")
    count = windows.hit("a")
    assert count.exceeded == Limit(12, 1, "day")


def test_a_refused_event_is_not_counted() -> None:
    clock = Clock()
    windows = MovingWindows(parse_limits("2/minute"), clock=clock)
    for _ in range(10):
        windows.hit("a")
    clock.now += 60
    assert windows.hit("a").remaining == 1


def test_failures_counted_and_checked_without_counting() -> None:
    clock = Clock()
    windows = MovingWindows(parse_limits("2/minute"), clock=clock)
    assert windows.exceeded("a") is None
    for _ in range(5):
        windows.add("a")
    limit, wait = windows.exceeded("a") or (None, 0.0)
    assert (limit, wait) == (Limit(2, 1, "minute"), 60)
    clock.now += 60
    assert windows.exceeded("a") is None


def test_idle_keys_are_forgotten() -> None:
    clock = Clock()
    windows = MovingWindows(parse_limits("5/minute"), clock=clock)
    for index in range(1000):
        windows.hit(f"client-{index}")
    clock.now += 61
    windows.hit("late")
    assert list(windows._events[0]) == ["late"]


def test_tracked_keys_are_bounded_least_recently_seen_first() -> None:
    """Rotating identities within a window cannot grow memory: past ``max_keys`` the least
    recently seen is forgotten, and one seen recently keeps its count."""
    clock = Clock()
    windows = MovingWindows(parse_limits("2/minute"), clock=clock, max_keys=100)
    windows.hit("steady")
    windows.hit("steady")
    for index in range(1000):
        windows.hit(f"rotating-{index}")
        if index % 50 == 0:
            windows.hit("steady")  # seen again: stays tracked, and refused
    assert len(windows._events[0]) <= 100 and len(windows._seen) <= 100
    assert windows.hit("steady").exceeded is not None
