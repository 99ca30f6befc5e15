"""Request bodies of the seed-compatible routes, and their translation into GenerationRequest.

Validation errors become specific client errors: 400 for a body of the wrong shape, 422 for a
value out of range, each naming the field and what to send instead.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from proxy.core.catalog import Catalog
from proxy.core.generation import GenerationRequest
from proxy.core.prompts import (
    HEALTH_SYSTEM_PROMPT,
    Message,
    is_templated,
    render_chat,
    render_plain,
)
from proxy.errors import InvalidParameter, InvalidRequest
from proxy.routes.body_errors import rejected_body


def has_visible_text(text: str) -> bool:
    """True when ``text`` holds a character that is neither whitespace nor an invisible
    format character (zero-width spaces and joiners, the BOM, direction marks)."""
    first = text.lstrip()[:1]
    if first.isprintable() and first:  # the usual case, decided in C
        return True
    for ch in text:  # a leading invisible character: look at each one
        if not ch.isspace() and unicodedata.category(ch) != "Cf":
            return True
    return False


class ChatMessage(Struct, forbid_unknown_fields=True):
    role: Literal["system", "user", "assistant"]
    content: str


class Parameters(Struct, forbid_unknown_fields=True):
    model: str | None = None
    max_new_tokens: Annotated[int, Meta(ge=1, le=1024)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=1, le=1000)] | None = None
    repetition_penalty: Annotated[float, Meta(gt=0, le=10)] | None = None
    do_sample: bool | None = None


class ChatRequest(Struct, forbid_unknown_fields=True):
    """The body of POST /api/chat and /api/predict: ``inputs`` or ``messages``, plus parameters."""

    inputs: str | None = None
    messages: Annotated[list[ChatMessage], Meta(min_length=1)] | None = None
    parameters: Parameters = msgspec.field(default_factory=Parameters)
    model: str | None = None
    stream: bool | None = None  # unset: the Accept header decides
    # The Inference API's flat options (use_cache, wait_for_model), finite like every number;
    # accepted for compatibility and ignored.
    options: dict[str, bool | int | float | str | None] | None = None


# Decoding and validating in one pass, strictly: JSON's types as they are, no coercion.
_CHAT = msgspec.json.Decoder(ChatRequest)


def parse_chat_request(body: bytes, *, max_new_tokens_limit: int) -> ChatRequest:
    """Parse and validate a request body; raises a ClientError naming what to fix."""
    try:
        return _CHAT.decode(body)
    except msgspec.MsgspecError as exc:
        raise rejected_body(
            exc, body, root=ChatRequest, max_new_tokens_limit=max_new_tokens_limit
        ) from None


def to_generation_request(
    body: ChatRequest,
    catalog: Catalog,
    *,
    max_prompt_chars: int,
    max_new_tokens_limit: int,
    system_prompt: str | None,
    stream: bool = False,
    cache_scope: str = "",
) -> GenerationRequest:
    """Normalise a validated body: resolve the model, fill defaults, render the prompt."""
    params = body.parameters
    if body.model and params.model and body.model.strip() != params.model.strip():
        raise InvalidRequest(
            "model is given twice with different values; set either model or parameters.model",
            code="conflicting_model",
        )
    spec = catalog.resolve(body.model or params.model)

    if body.inputs is not None and body.messages is not None:
        raise InvalidRequest("send either inputs or messages, not both", code="invalid_request")
    if body.inputs is None and body.messages is None:
        raise InvalidRequest(
            'the prompt is missing: send "inputs" (a string) or "messages" '
            '(a list of {"role", "content"})',
            code="missing_prompt",
        )
    if body.inputs is not None:
        messages: tuple[Message, ...] = (Message("user", body.inputs),)
    else:
        assert body.messages is not None
        messages = tuple(Message(m.role, m.content) for m in body.messages)
    if not any(m.role == "user" and has_visible_text(m.content) for m in messages):
        raise InvalidParameter(
            "the prompt is empty: write something in inputs or in a user message",
            code="empty_prompt",
        )
    size = sum(len(m.content) for m in messages)
    if size > max_prompt_chars:
        raise InvalidParameter(
            f"the prompt is {size} characters long; the limit is {max_prompt_chars}",
            code="prompt_too_long",
        )

    max_new_tokens = params.max_new_tokens or min(spec.max_new_tokens, max_new_tokens_limit)
    if max_new_tokens > max_new_tokens_limit:
        raise InvalidParameter(
            f"parameters.max_new_tokens must be an integer from 1 to {max_new_tokens_limit}; "
            f"got {max_new_tokens}"
        )
    temperature = spec.temperature if params.temperature is None else params.temperature
    top_p = spec.top_p if params.top_p is None else params.top_p
    do_sample = spec.do_sample if params.do_sample is None else params.do_sample
    if temperature == 0:
        do_sample = False

    default_system = (system_prompt or HEALTH_SYSTEM_PROMPT) if spec.chat else ""
    system = messages[0].content if messages[0].role == "system" else default_system
    if body.inputs is not None and (not spec.chat or is_templated(body.inputs)):
        prompt = body.inputs
    elif spec.chat:
        prompt = render_chat(messages, default_system=default_system)
    else:
        prompt = render_plain(messages)
    return GenerationRequest(
        model=spec,
        messages=messages,
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        temperature=round(float(temperature), 4),
        top_p=round(float(top_p), 4),
        do_sample=do_sample,
        stream=stream,
        cache_scope=cache_scope,
        top_k=params.top_k,
        repetition_penalty=(
            None if params.repetition_penalty is None else round(params.repetition_penalty, 4)
        ),
        system=system,
    )
