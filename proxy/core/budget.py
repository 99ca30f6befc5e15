"""Every reply has a bound: ``max_new_tokens`` by the gateway's own estimate, with a margin.

An upstream that takes the token budget is trusted with it, but not without limit: a broken or
hostile one that streams without end is cut at ``BUDGET_MARGIN`` times the budget (by the
4-characters-a-token estimate, which may undercount long words), answered with
``finish_reason: "length"``, and its call closed. A Space endpoint with no budget parameter is
cut at the budget itself (``upstreams/gradio_reply.py``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

from proxy.core.generation import CHARS_PER_TOKEN, Chunk, Generation, GenerationRequest

BUDGET_MARGIN = 2


def budget_chars(req: GenerationRequest, *, margin: int = BUDGET_MARGIN) -> int:
    """The most characters a reply to ``req`` may have."""
    return req.max_new_tokens * CHARS_PER_TOKEN * margin


def cut_at_budget(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, at the last word boundary when one is in
    the second half (a word is not split when it can be avoided)."""
    head = text[:limit]
    boundary = max(head.rfind(" "), head.rfind("\n"))
    return head[:boundary].rstrip() if boundary > limit // 2 else head


def bound_generation(generation: Generation, limit: int) -> Generation:
    if len(generation.text) <= limit:
        return generation
    text = cut_at_budget(generation.text, limit)
    return Generation(text, generation.model, generation.upstream, "length", None)


async def bound_stream(
    chunks: AsyncGenerator[Chunk, None], limit: int
) -> AsyncGenerator[Chunk, None]:
    """``chunks`` up to ``limit`` characters in all; past it, the rest of the allowed text
    with ``finish_reason: "length"``, and the upstream's stream closed."""
    async with aclosing(chunks):
        size = 0
        async for chunk in chunks:
            total = len(chunk.text) if chunk.replace else size + len(chunk.text)
            if total <= limit:
                size = total
                yield chunk
                continue
            if chunk.replace:
                yield Chunk(cut_at_budget(chunk.text, limit), replace=True, finish_reason="length")
            else:
                yield Chunk(chunk.text[: limit - size], finish_reason="length")
            return
