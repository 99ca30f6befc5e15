"""Stop sequences applied by the gateway, for upstreams that cannot (a Gradio Space)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from proxy.core.generation import Chunk, Generation


def cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to the first stop sequence, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def stop_generation(generation: Generation, stop: tuple[str, ...]) -> Generation:
    text, hit = cut_at_stop(generation.text, stop)
    if not hit:
        return generation
    return Generation(text, generation.model, generation.upstream, "stop", generation.usage)


async def stop_stream(
    chunks: AsyncIterator[Chunk], stop: tuple[str, ...]
) -> AsyncGenerator[Chunk, None]:
    """The chunks up to the first stop sequence. Text that could be the start of a stop
    sequence is held back until the next chunk shows whether it is."""
    hold = max(len(s) for s in stop) - 1
    text = ""  # everything received
    sent = 0  # how much of it was passed on
    async for chunk in chunks:
        if chunk.replace:
            text, sent = chunk.text, 0
            chunk = Chunk(chunk.text[:0], replace=True, finish_reason=chunk.finish_reason)
        else:
            text += chunk.text
        cut, hit = cut_at_stop(text, stop)
        if hit:
            yield Chunk(cut[sent:], finish_reason="stop", usage=chunk.usage)
            return
        end = len(text) if chunk.finish_reason else max(sent, len(text) - hold)
        if chunk.replace:
            yield Chunk(text[:end], replace=True)
        elif end > sent or chunk.finish_reason:
            yield Chunk(text[sent:end], finish_reason=chunk.finish_reason, usage=chunk.usage)
        sent = end
    if sent < len(text):
        yield Chunk(text[sent:])
