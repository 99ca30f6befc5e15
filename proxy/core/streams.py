"""A stream of chunks started so that its failures before output are HTTP statuses, and a
stored reply given back as the stream a live one would have been."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Coroutine
from typing import Any

from proxy.core.cache import CachedGeneration
from proxy.core.generation import Chunk

_WORDS = re.compile(r"\S+\s*|\s+")


async def primed(chunks: AsyncGenerator[Chunk, None]) -> AsyncGenerator[Chunk, None]:
    """``chunks`` with the first one already received, so that a failure before any output
    (a 429 or 503 from the upstream, say) raises here and becomes a real HTTP status with
    Retry-After, instead of an error event after a 200."""
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await chunks.aclose()
        raise
    return Primed(first, chunks)


class Primed(AsyncGenerator[Chunk, None]):
    """A stream whose first chunk was taken already: that chunk, then the stream's own.

    Past the first chunk every call goes straight to the stream: no generator frame of its
    own between a chunk and its reader (a stream passes each chunk through several)."""

    __slots__ = ("_first", "_chunks")

    def __init__(self, first: Chunk | None, chunks: AsyncGenerator[Chunk, None]) -> None:
        self._first = first
        self._chunks = chunks

    def __anext__(self) -> Coroutine[Any, Any, Chunk]:
        first = self._first
        if first is None:
            return self._chunks.__anext__()
        self._first = None
        return _given(first)

    def asend(self, value: None) -> Coroutine[Any, Any, Chunk]:
        return self.__anext__() if value is None else self._chunks.asend(value)

    def athrow(self, *args: Any) -> Coroutine[Any, Any, Chunk]:
        self._first = None
        return self._chunks.athrow(*args)

    def aclose(self) -> Coroutine[Any, Any, None]:
        self._first = None
        return self._chunks.aclose()


async def _given(chunk: Chunk) -> Chunk:
    return chunk


async def replayed(entry: CachedGeneration) -> AsyncGenerator[Chunk, None]:
    """A stored reply as word-sized chunks, as a live stream would have sent it."""
    pieces = _WORDS.findall(entry.text) or [""]
    for piece in pieces[:-1]:
        yield Chunk(piece)
    yield Chunk(pieces[-1], finish_reason=entry.finish_reason)
