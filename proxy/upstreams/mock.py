"""Test mode: an upstream that answers health questions without a model.

Replies are deterministic for the same model and input, topical, put emergency guidance first
when the message calls for it, and always end with a not-medical-advice line. It is a product
feature for demos and frontend development, so it paces streams like a real model would.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator
from functools import lru_cache

from proxy.generation import Chunk, Generation, GenerationRequest
from proxy.upstreams.base import Readiness
from proxy.upstreams.mock_replies import DISCLAIMER, emergency_guidance, match_topic

# Roughly how many English words one Llama 2 token is worth, to respect max_new_tokens.
WORDS_PER_TOKEN = 0.75


@lru_cache(maxsize=1024)
def _word_count(line: str) -> int:
    """Words in ``line``: the replies are built from a few hundred fixed lines."""
    return len(line.split())


def compose_reply(req: GenerationRequest) -> tuple[str, bool]:
    """The mock reply for ``req`` and whether it was cut short by max_new_tokens."""
    text = req.last_user_text
    digest = hashlib.sha256(f"{req.model.name}\0{text}".encode()).digest()
    topic = match_topic(text)
    urgent = emergency_guidance(text)

    opener = topic.openers[digest[0] % len(topic.openers)]
    # Larger models give a fuller answer; the tip order varies with the input.
    count = 4 if "13b" in req.model.name else 3
    start = digest[1] % len(topic.tips)
    tips = [topic.tips[(start + i) % len(topic.tips)] for i in range(count)]
    if req.model.chat:
        body = [opener, "Here are a few things that help:"] + [f"- {tip}" for tip in tips]
    else:
        body = [opener, *tips]

    budget = max(1, int(req.max_new_tokens * WORDS_PER_TOKEN))
    head = [urgent] if urgent else []
    fixed_words = sum(_word_count(part) for part in head) + _word_count(DISCLAIMER)
    room = budget - fixed_words
    kept: list[str] = []
    truncated = False
    for line in body:
        count = _word_count(line)
        if count <= room:
            kept.append(line)
            room -= count
            continue
        if room > 0:
            kept.append(" ".join(line.split()[:room]) + "…")
        truncated = True
        break
    sections = [*head, "\n".join(kept)] if kept else head
    return "\n\n".join([*sections, DISCLAIMER]), truncated


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

    async def aclose(self) -> None:
        return None
