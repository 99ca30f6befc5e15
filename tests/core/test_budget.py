"""The gateway's bound on every reply, whatever the upstream sends."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from proxy.core.budget import bound_generation, bound_stream, cut_at_budget
from proxy.core.generation import Chunk, Generation


def test_a_cut_keeps_whole_words_when_it_can() -> None:
    assert cut_at_budget("alpha beta gamma", 12) == "alpha beta"
    assert cut_at_budget("supercalifragilistic", 8) == "supercal"


def test_a_whole_reply_past_the_bound_ends_with_length() -> None:
    long = Generation("word " * 100, "m", "u")
    cut = bound_generation(long, 40)
    assert len(cut.text) <= 40 and cut.finish_reason == "length"
    short = Generation("fine", "m", "u")
    assert bound_generation(short, 40) is short


async def test_an_endless_stream_is_cut_and_closed() -> None:
    closed = []

    async def endless() -> AsyncGenerator[Chunk, None]:
        try:
            while True:
                yield Chunk("abc ")
        finally:
            closed.append(True)

    chunks = [c async for c in bound_stream(endless(), 10)]
    assert "".join(c.text for c in chunks) == "abc abc ab"
    assert chunks[-1].finish_reason == "length"
    assert closed == [True]  # the upstream's stream is closed there


async def test_a_rewrite_past_the_bound_is_cut_too() -> None:
    async def rewrites() -> AsyncGenerator[Chunk, None]:
        yield Chunk("short")
        yield Chunk("x " * 50, replace=True)

    chunks = [c async for c in bound_stream(rewrites(), 20)]
    assert chunks[-1].replace and len(chunks[-1].text) <= 20
    assert chunks[-1].finish_reason == "length"
