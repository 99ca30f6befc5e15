"""The values passed between the routes, the gateway core and the upstream adapters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proxy.catalog import ModelSpec
from proxy.prompts import Message

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One validated, normalised generation: defaults filled in, prompt rendered."""

    model: ModelSpec
    messages: tuple[Message, ...]
    prompt: str
    max_new_tokens: int
    temperature: float
    top_p: float
    do_sample: bool
    stream: bool = False

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return self.prompt


@dataclass(frozen=True, slots=True)
class Generation:
    """A complete generation as an upstream returned it."""

    text: str
    model: str
    upstream: str
    finish_reason: FinishReason = "stop"
