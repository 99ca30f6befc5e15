"""Test mode: an upstream that answers health questions without a model.

Replies are deterministic for the same model and input, topical, put emergency guidance first
when the message calls for it, and end with a not-medical-advice line whenever the token
budget has room for it. It is a product
feature for demos and frontend development, so it paces streams like a real model would.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator
from functools import lru_cache

from proxy.core.generation import CHARS_PER_TOKEN, Chunk, Generation, GenerationRequest
from proxy.core.upstream import Readiness
from proxy.upstreams.mock_replies import DISCLAIMER, Topic, emergency_guidance, match_topic

# Below this room for topical text, the disclaimer and emergency lines give way to it.
MIN_TOPICAL_CHARS = 40


def compose_reply(req: GenerationRequest) -> tuple[str, bool]:
    """The mock reply for ``req`` and whether it was cut short by max_new_tokens."""
    text = req.last_user_text
    digest = hashlib.sha256(f"{req.model.name}\0{text}".encode()).digest()
    topic = match_topic(text)
    # Larger models give a fuller answer; the opener and the tip order vary with the input.
    return _composed(
        topic,
        digest[0] % len(topic.openers),
        digest[1] % len(topic.tips),
        4 if "13b" in req.model.name else 3,
        req.model.chat,
        emergency_guidance(text),
        req.max_new_tokens,
    )


@lru_cache(maxsize=4096)
def _composed(
    topic: Topic,
    opener: int,
    start: int,
    count: int,
    chat: bool,
    urgent: str | None,
    max_new_tokens: int,
) -> tuple[str, bool]:
    """A reply from its parts: few enough (topics, openers, tip orders, budgets) that each is
    composed once."""
    tips = [topic.tips[(start + i) % len(topic.tips)] for i in range(count)]
    if chat:
        body = [topic.openers[opener], "Here are a few things that help:"]
        body += [f"- {tip}" for tip in tips]
    else:
        body = [topic.openers[opener], *tips]
    return fit_to_budget("\n".join(body), urgent, max_new_tokens)


def _cut(text: str, chars: int) -> str:
    """``text`` cut to at most ``chars`` characters, at a word where it can, marked with …."""
    if len(text) <= chars:
        return text
    head = text[: max(chars - 1, 0)]
    if " " in head.strip():
        head = head.rsplit(" ", 1)[0]
    return head.rstrip() + "…" if chars > 1 else text[:chars]


def fit_to_budget(topical: str, urgent: str | None, max_new_tokens: int) -> tuple[str, bool]:
    """The reply within ``max_new_tokens`` by the gateway's own token estimate (so the usage
    it reports never exceeds the budget), and whether it was cut. The emergency guidance and
    the disclaimer keep their place while the budget leaves room for some topical text too; a
    smaller budget gets the start of the reply alone: the emergency guidance when there is one
    (safety first), else the topical answer."""
    chars = CHARS_PER_TOKEN * max_new_tokens
    fixed = [part for part in (urgent, DISCLAIMER) if part]
    whole = "\n\n".join([*fixed[:-1], topical, fixed[-1]])
    if len(whole) <= chars:
        return whole, False
    room = chars - sum(len(part) + 2 for part in fixed)
    if room >= MIN_TOPICAL_CHARS:
        return "\n\n".join([*fixed[:-1], _cut(topical, room), fixed[-1]]), True
    if urgent and len(urgent) + 2 + len(DISCLAIMER) <= chars:
        return f"{urgent}\n\n{DISCLAIMER}", True
    return _cut(urgent or topical, chars), True


class MockUpstream:
    """The ``mock`` upstream: always ready, never calls the network."""

    name = "mock"
    identity = "mock"

    def __init__(self, *, latency_ms: int = 0, token_delay_ms: int = 0) -> None:
        self._latency = latency_ms / 1000
        self._token_delay = token_delay_ms / 1000

    async def start(self) -> None:
        return None

    async def generate(self, req: GenerationRequest) -> Generation:
        if self._latency:
            await asyncio.sleep(self._latency)
        text, truncated = compose_reply(req)
        return Generation(
            text=text,
            model=req.model.name,
            upstream=self.name,
            finish_reason="length" if truncated else "stop",
        )

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        if self._latency:
            await asyncio.sleep(self._latency)
        text, truncated = compose_reply(req)
        words = text.split(" ")
        for index, word in enumerate(words):
            if self._token_delay and index:
                await asyncio.sleep(self._token_delay)
            last = index == len(words) - 1
            yield Chunk(
                word if not index else " " + word,
                finish_reason=("length" if truncated else "stop") if last else None,
            )

    async def ready(self) -> Readiness:
        return Readiness(True, "test mode: replies come from the built-in mock")

    async def probe(self) -> Readiness:
        return await self.ready()

    async def aclose(self) -> None:
        return None
