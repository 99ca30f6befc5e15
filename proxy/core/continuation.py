"""How a broken stream is continued by another upstream: where to cut what was sent, the
budget left, and the continuation's chunks without the text the client already has.

The continuation starts from the last word boundary of what was sent (a model continues a
whole word better than half of one) and generates that last partial word again; the part
the client already has is dropped. With greedy decoding on the same model the continuation
repeats it exactly; if it does not (sampling), the client gets a ``replace`` chunk with the
whole text so far, which ``/api/chat`` streams as a ``replace`` event.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from proxy.core.generation import Chunk, estimate_tokens

# A text that ends with one of these ends between words.
_WORD_END = frozenset(".,;:!?)]}\"'")


def split_at_word(text: str) -> tuple[str, str]:
    """(the prefix to continue from, the partial last word after it)."""
    if not text or text[-1].isspace() or text[-1] in _WORD_END:
        return text, ""
    cut = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"))
    if cut <= 0:  # one word so far: continue from it whole
        return text, ""
    return text[:cut], text[cut:]


def budget_left(max_new_tokens: int, prefix: str) -> int:
    """The tokens left for the continuation: ``max_new_tokens`` less what ``prefix`` took
    (estimated at CHARS_PER_TOKEN characters a token, as the gateway estimates usage)."""
    return max_new_tokens - estimate_tokens(prefix)


async def without_tail(
    chunks: AsyncIterator[Chunk], prefix: str, tail: str
) -> AsyncGenerator[Chunk, None]:
    """The continuation's chunks as the client should get them after ``prefix + tail``: its
    repeat of ``tail`` dropped, its rewrites as whole texts, its usage dropped (the counts
    are of one part only; the gateway estimates the whole)."""
    held = ""  # the continuation's text while it may still be repeating ``tail``
    matching = bool(tail)
    async for chunk in chunks:
        if chunk.replace:
            if matching:
                held = chunk.text
            else:
                yield Chunk(prefix + chunk.text, replace=True, finish_reason=chunk.finish_reason)
                continue
        elif matching:
            held += chunk.text
        else:
            yield Chunk(chunk.text, finish_reason=chunk.finish_reason)
            continue
        if len(held) < len(tail) and tail.startswith(held):
            if chunk.finish_reason:
                yield Chunk("", finish_reason=chunk.finish_reason)
            continue  # still repeating the tail
        matching = False
        if held.startswith(tail):
            yield Chunk(held[len(tail) :], finish_reason=chunk.finish_reason)
        else:  # it took another way from the partial word: the client gets the whole text
            yield Chunk(prefix + held, replace=True, finish_reason=chunk.finish_reason)
