"""A primed stream: its failure before output raises at once; after that, its chunks as the
stream gives them, and closing it closes the stream."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import pytest

from proxy.core.generation import Chunk
from proxy.core.streams import primed
from proxy.errors import UpstreamUnavailable


class Words:
    """A stream of words that records how it ended."""

    def __init__(self, words: list[str], fail_first: bool = False) -> None:
        self.words, self.fail_first = words, fail_first
        self.closed = False

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        try:
            if self.fail_first:
                raise UpstreamUnavailable("the Space is asleep", retry_after=20)
            for word in self.words:
                yield Chunk(word)
        finally:
            self.closed = True


async def test_the_first_chunk_then_the_rest_in_order() -> None:
    words = Words(["Rest ", "well ", "tonight."])
    stream = await primed(words.chunks())
    assert not words.closed  # the stream is not read beyond its first chunk yet
    assert [c.text async for c in stream] == ["Rest ", "well ", "tonight."]
    assert words.closed


async def test_a_failure_before_any_output_raises_from_primed_and_closes_the_stream() -> None:
    words = Words(["never"], fail_first=True)
    with pytest.raises(UpstreamUnavailable):
        await primed(words.chunks())
    assert words.closed


async def test_an_empty_stream_ends_at_once() -> None:
    stream = await primed(Words([]).chunks())
    assert [c async for c in stream] == []


async def test_closing_it_after_the_first_chunk_closes_the_stream() -> None:
    words = Words(["Drink ", "water ", "often."])
    stream = await primed(words.chunks())
    assert (await anext(stream)).text == "Drink "
    assert (await anext(stream)).text == "water "
    await stream.aclose()
    assert words.closed
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_closing_it_before_reading_closes_the_stream_and_drops_the_first_chunk() -> None:
    words = Words(["Drink ", "water."])
    stream = await primed(words.chunks())
    await stream.aclose()
    assert words.closed
    assert [c async for c in stream] == []
