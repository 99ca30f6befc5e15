"""The values passed between the routes, the gateway core and the upstream adapters."""

from __future__ import annotations

from typing import Literal

from msgspec import Struct

from proxy.core.catalog import ModelSpec
from proxy.core.prompts import Message

FinishReason = Literal["stop", "length"]


class GenerationRequest(Struct, frozen=True):
    """One validated, normalised generation: defaults filled in, prompt rendered."""

    model: ModelSpec
    messages: tuple[Message, ...]
    prompt: str
    max_new_tokens: int
    temperature: float
    top_p: float
    do_sample: bool
    stream: bool = False
    # Sampling options only some upstreams take; None: the caller did not ask (the
    # upstream's own default applies).
    top_k: int | None = None
    repetition_penalty: float | None = None
    # The system prompt in force: the caller's leading system message, else the gateway's
    # (chat models); "" for none. A chat endpoint of a Space gets it in its own parameter.
    system: str = ""
    stop: tuple[str, ...] = ()
    # Whose cache entries this request reads and writes (CACHE_SCOPE=caller); "" is shared.
    cache_scope: str = ""
    # The start of the answer, already sent to the client by an upstream whose stream broke:
    # the upstream asked now continues it (see continued_prompt).
    prefill: str = ""
    # Whether the client can take text back (a ``replace`` chunk): the seed API's stream can,
    # OpenAI's cannot. A broken stream is restarted from the prompt only for one that can.
    rewritable: bool = True

    @property
    def continued_prompt(self) -> str:
        """The rendered prompt followed by ``prefill``, as a raw-prompt upstream (a Space's
        prompt parameter, TGI's inputs) continues it: ``[/INST] partial``, one space between
        unless either side has one."""
        if not self.prefill:
            return self.prompt
        joint = "" if self.prompt[-1:].isspace() or self.prefill[:1].isspace() else " "
        return self.prompt + joint + self.prefill

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return self.prompt


class Usage(Struct, frozen=True):
    """Token counts; ``estimated`` when the upstream did not report them."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False


class Generation(Struct, frozen=True):
    """A complete generation as an upstream returned it."""

    text: str
    model: str
    upstream: str
    finish_reason: FinishReason = "stop"
    usage: Usage | None = None


class Chunk(Struct, frozen=True):
    """One step of a stream: ``text`` to append, or, with ``replace``, the whole text so far
    (a Space rewrote what it had sent). The last chunk may carry the finish reason and usage."""

    text: str = ""
    replace: bool = False
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


# A rough Llama 2 token: about four characters of English.
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """A rough Llama 2 token count: about CHARS_PER_TOKEN characters of English per token."""
    return max(1, -(-len(text) // CHARS_PER_TOKEN)) if text else 0
