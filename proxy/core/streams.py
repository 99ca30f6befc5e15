"""A stream of chunks started so that its failures before output are HTTP statuses, and a
stored reply given back as the stream a live one would have been."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from contextlib import aclosing

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

    async def rest() -> AsyncGenerator[Chunk, None]:
        async with aclosing(chunks):
            if first is not None:
                yield first
            async for chunk in chunks:
                yield chunk

    return rest()


async def replayed(entry: CachedGeneration) -> AsyncGenerator[Chunk, None]:
    """A stored reply as word-sized chunks, as a live stream would have sent it."""
    pieces = _WORDS.findall(entry.text) or [""]
    for piece in pieces[:-1]:
        yield Chunk(piece)
    yield Chunk(pieces[-1], finish_reason=entry.finish_reason)
