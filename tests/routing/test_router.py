"""The router's pure parts: the order it tries upstreams in, what it skips and answers when
nothing can serve, where a broken stream is cut and how the continuation is joined on, and
the UPSTREAMS_FILE's validation."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

from proxy.config.environment import describe_error
from proxy.config.fields import ConfigError
from proxy.config.settings import Settings
from proxy.core.continuation import budget_left, split_at_word, without_tail
from proxy.core.generation import Chunk
from proxy.errors import (
    GatewayError,
    UpstreamBusy,
    UpstreamRateLimited,
    UpstreamStarting,
    UpstreamUnreachable,
)
from proxy.routing.members import Member, plan, settle, unavailable


class FakeGuarded:
    """What routing reads of a guarded upstream: its circuits and its concurrency bound."""

    def __init__(self) -> None:
        self.open: set[str] = set()
        self.in_use = False

    def blocked(self, model: str) -> bool:
        return model in self.open

    def open_models(self) -> list[str]:
        return sorted(self.open)

    def retry_after(self, model: str) -> int:
        return 12 if model in self.open else 0


def member(name: str, priority: int = 0, weight: int = 1, models: tuple[str, ...] = ()) -> Member:
    return Member(name, FakeGuarded(), frozenset(models), priority, weight)  # type: ignore[arg-type]


MODEL = "llama-2-7b-chat"


def firsts(members: list[Member], n: int) -> Counter[str]:
    return Counter(plan(members, MODEL, 0.0, frozenset()).candidates[0].name for _ in range(n))


def test_weights_split_sequential_traffic_exactly() -> None:
    members = [member("a", weight=3), member("b", weight=1), member("c", priority=1)]
    assert firsts(members, 40) == {"a": 30, "b": 10}


def test_the_order_is_priority_then_load_then_lower_priorities() -> None:
    a, b, c = member("a", weight=2), member("b"), member("c", priority=1)
    a.in_flight = 4  # 2 per unit of weight, against b's 0
    order = plan([a, b, c], MODEL, 0.0, frozenset()).candidates
    assert [m.name for m in order] == ["b", "a", "c"]


def test_fewer_calls_in_flight_per_weight_wins() -> None:
    a, b = member("a", weight=3), member("b", weight=1)
    a.in_flight, b.in_flight = 3, 0
    assert plan([a, b], MODEL, 0.0, frozenset()).candidates[0] is b
    b.in_flight = 2  # 2 per weight against a's 1
    assert plan([a, b], MODEL, 0.0, frozenset()).candidates[0] is a


def test_an_upstream_at_its_bound_is_the_last_resort() -> None:
    a, b = member("a"), member("b", priority=1)
    a.upstream.in_use = True  # type: ignore[attr-defined]
    assert [m.name for m in plan([a, b], MODEL, 0.0, frozenset()).candidates] == ["b", "a"]


def test_only_upstreams_of_the_model_are_candidates() -> None:
    a, b = member("a", models=("llama-2-13b-chat",)), member("b")
    assert [m.name for m in plan([a, b], MODEL, 0.0, frozenset()).candidates] == ["b"]


def asked(error: GatewayError) -> GatewayError:
    """``error`` as the upstream said it: its Retry-After the wait it asked for."""
    error.upstream_wait = float(error.retry_after or 0)
    return error


def test_a_wait_the_upstream_did_not_name_is_the_cooldown() -> None:
    a = member("a")
    # A 503 queue full with no Retry-After: the gateway tells the client 10 s, but the router
    # skips the upstream only for its own cool-down, then probes it.
    settle(a, UpstreamBusy("queue full", retry_after=10), now=0.0, cooldown=5)
    assert a.state(4.9, MODEL) == "cooling" and a.state(5.0, MODEL) == "ready"


def test_what_cannot_serve_now_is_skipped() -> None:
    cold, cooling, open_, ready = member("cold"), member("cooling"), member("open"), member("ok")
    settle(cold, UpstreamStarting("asleep", retry_after=20), now=0.0, cooldown=5)
    settle(cooling, asked(UpstreamRateLimited("429", retry_after=30)), now=0.0, cooldown=5)
    open_.upstream.open.add(MODEL)  # type: ignore[attr-defined]
    found = plan([cold, cooling, open_, ready], MODEL, 1.0, frozenset())
    assert [m.name for m in found.candidates] == ["ok"]
    assert [m.state(1.0, MODEL) for m in found.skipped] == ["cold", "cooling", "open"]
    # A 429's Retry-After, not the general cool-down, says when it may serve again.
    assert cooling.wait(1.0, MODEL) == 29
    assert plan([cooling], MODEL, 30.5, frozenset()).candidates == [cooling]


def test_a_moments_failure_cools_for_the_cooldown() -> None:
    a = member("a")
    settle(a, UpstreamUnreachable("refused"), now=0.0, cooldown=5)
    assert a.state(4.9, MODEL) == "cooling" and a.worth_a_try
    assert a.state(5.0, MODEL) == "ready"


def test_all_skipped_answers_with_the_smallest_retry_after() -> None:
    a, b = member("a"), member("b")
    settle(a, UpstreamStarting("asleep", retry_after=20), now=0.0, cooldown=5)
    settle(b, asked(UpstreamRateLimited("429", retry_after=42)), now=0.0, cooldown=5)
    error = unavailable([a, b], MODEL, 0.0)
    assert (error.status, error.code, error.headers["Retry-After"]) == (
        503,
        "upstream_starting",
        "20",
    )
    c = member("c")
    settle(c, asked(UpstreamRateLimited("quota", retry_after=60)), now=0.0, cooldown=5)
    error = unavailable([b, c], MODEL, 0.0)
    assert (error.status, error.code, error.headers["Retry-After"]) == (
        429,
        "upstream_rate_limited",
        "42",
    )
    d = member("d")
    settle(d, asked(UpstreamBusy("queue full", retry_after=7)), now=0.0, cooldown=5)
    assert unavailable([b, d], MODEL, 0.0).code == "upstream_busy"


@pytest.mark.parametrize(
    ("sent", "prefix", "tail"),
    [
        ("Rest well and", "Rest well", " and"),
        ("Rest well and ", "Rest well and ", ""),
        ("Rest well.", "Rest well.", ""),
        ("Rest", "Rest", ""),
        ("", "", ""),
        ("Line one\nsec", "Line one", "\nsec"),
    ],
)
def test_a_broken_answer_is_continued_from_its_last_word_boundary(
    sent: str, prefix: str, tail: str
) -> None:
    assert split_at_word(sent) == (prefix, tail)
    assert prefix + tail == sent


def test_the_budget_left_is_what_the_prefix_did_not_take() -> None:
    assert budget_left(64, "Rest well") == 61  # nine characters: three tokens
    assert budget_left(2, "A much longer answer than two tokens") < 1


async def _chunks(*chunks: Chunk) -> AsyncGenerator[Chunk, None]:
    for chunk in chunks:
        yield chunk


async def joined(prefix: str, tail: str, *chunks: Chunk) -> list[Chunk]:
    return [c async for c in without_tail(_chunks(*chunks), prefix, tail)]


async def test_the_repeated_partial_word_is_dropped_exactly_once() -> None:
    out = await joined(
        "Rest well",
        " and",
        Chunk(" a"),
        Chunk("nd"),
        Chunk(" drink"),
        Chunk(" water.", finish_reason="stop"),
    )
    assert "".join(c.text for c in out) == " drink water."
    assert not any(c.replace for c in out)
    assert out[-1].finish_reason == "stop"


async def test_a_continuation_that_takes_another_way_replaces_the_whole_text() -> None:
    out = await joined("Rest well", " and", Chunk(" or"), Chunk(" sleep."))
    assert out[0] == Chunk("Rest well or", replace=True)
    assert out[1] == Chunk(" sleep.")


async def test_a_continuation_rewrite_is_a_whole_text_and_usage_is_dropped() -> None:
    out = await joined("Rest", "", Chunk(" well"), Chunk(" we", replace=True))
    assert out == [Chunk(" well"), Chunk("Rest we", replace=True)]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "upstreams.toml"
    path.write_text(text)
    return str(path)


def test_a_bad_file_names_the_entry_and_the_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[upstreams]]\nname = "a"\nkind = "gradio"\nurl = "owner/a"\n\n'
        '[[upstreams]]\nname = "b"\nkind = "tgx"\nurl = "http://x"\nweight = 0\n',
    )
    with pytest.raises(ConfigError) as info:
        Settings(upstreams_file=path)
    message = describe_error(info.value)
    assert "entry 2 ('b'), kind: must be one of 'gradio', 'tgi', 'openai', 'mock'" in message
    assert "entry 2 ('b'), weight: must be an integer from 1 to 1000; got 0" in message


MOCK = '[[upstreams]]\nname = "a"\nkind = "mock"\n'


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[[upstreams]]\nname = "a"\nkind = "tgi"\n', "entry 1 ('a'), url: a tgi upstream needs"),
        (MOCK + "colour = 1\n", "entry 1 ('a'), colour: is not a setting"),
        (MOCK + 'models = ["gpt-4"]\n', "'gpt-4' is not a model"),
        (MOCK + 'token = "hf_x"\n', "never put a token in"),
        (MOCK + 'token_env = "NOPE_TOKEN"\n', "token_env: NOPE_TOKEN is not set"),
        (MOCK + MOCK, "entry 2 ('a'): name is used by an earlier entry"),
        ("[[upstreams]\n", "not valid TOML"),
        ("", "upstreams: the file needs at least one [[upstreams]] table"),
    ],
)
def test_each_mistake_stops_start_up_with_what_to_fix(
    tmp_path: Path, text: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings(upstreams_file=write(tmp_path, text))
    assert words in describe_error(info.value)


def test_the_file_and_a_single_upstream_exclude_each_other(tmp_path: Path) -> None:
    path = write(tmp_path, '[[upstreams]]\nname = "a"\nkind = "mock"\n')
    with pytest.raises(ConfigError) as info:
        Settings(upstreams_file=path, upstream_url="http://x")
    assert "UPSTREAMS_FILE or UPSTREAM_URL, not both" in describe_error(info.value)


def test_each_upstream_gets_its_own_token_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPACE_B_TOKEN", "hf_space_b_secret")
    path = write(
        tmp_path,
        '[[upstreams]]\nname = "a"\nkind = "gradio"\nurl = "owner/space-a"\n'
        "upstream_read_timeout = 2\n\n"
        '[[upstreams]]\nname = "b"\nkind = "tgi"\nurl = "http://127.0.0.1:9"\n'
        'token_env = "SPACE_B_TOKEN"\nupstream_retries = 1\n',
    )
    settings = Settings(upstreams_file=path, upstream_read_timeout=20, upstream_retries=3)
    a, b = (settings.for_upstream(e) for e in settings.upstream_entries)
    assert (a.upstream_url, a.space_id, a.upstream_read_timeout) == (
        "https://owner-space-a.hf.space",
        "owner/space-a",
        2.0,
    )
    assert a.hf_token is None  # no token_env: no token, never another upstream's
    assert b.hf_token is not None and b.hf_token.get_secret_value() == "hf_space_b_secret"
    assert b.upstream_read_timeout == 20.0
    # Retried in place once (FAILOVER_RETRIES) before the router moves on, with a short
    # Retry-After waited out (FAILOVER_RETRY_AFTER_MAX), unless a table says otherwise.
    assert (a.upstream_retries, b.upstream_retries) == (1, 1)
    assert a.upstream_retry_after_max == 3.0
    tuned = Settings(upstreams_file=path, failover_retries=0, failover_retry_after_max=1.5)
    first, second = (tuned.for_upstream(e) for e in tuned.upstream_entries)
    assert (first.upstream_retries, second.upstream_retries) == (0, 1)
    assert first.upstream_retry_after_max == 1.5
    assert "hf_space_b_secret" in settings.secrets  # redacted like every other secret
