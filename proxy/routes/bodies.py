"""Request bodies of the seed-compatible routes, and their translation into GenerationRequest.

Validation errors become specific client errors: 400 for a body of the wrong shape, 422 for a
value out of range, each naming the field and what to send instead.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proxy.core.catalog import Catalog
from proxy.core.generation import GenerationRequest
from proxy.core.prompts import (
    HEALTH_SYSTEM_PROMPT,
    Message,
    is_templated,
    render_chat,
    render_plain,
)
from proxy.errors import ClientError, InvalidParameter, InvalidRequest

_STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)

RANGES = {
    "max_new_tokens": "an integer from 1 to {limit}",
    "max_tokens": "an integer from 1 to {limit}",
    "max_completion_tokens": "an integer from 1 to {limit}",
    "temperature": "a number from 0 to 2 (0 means greedy decoding)",
    "top_p": "a number greater than 0 and at most 1",
    "top_k": "an integer from 1 to 1000",
    "repetition_penalty": "a number greater than 0 and at most 10 (1 means none)",
}


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


# Request values are never echoed whole into an error: at most this many characters.
ECHO_CHARS = 40


def echo(value: object) -> str:
    """``repr(value)``, cut to ECHO_CHARS."""
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 3] + "..."


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "user", "assistant"]
    content: str


class Parameters(BaseModel):
    model_config = _STRICT
    model: str | None = None
    max_new_tokens: Annotated[int, Field(ge=1, le=1024)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=1, le=1000)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    do_sample: bool | None = None


class ChatRequest(BaseModel):
    """The body of POST /api/chat and /api/predict: ``inputs`` or ``messages``, plus parameters."""

    model_config = _STRICT
    inputs: str | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1)] | None = None
    # A factory, not an instance: pydantic deep-copies instance defaults on every request.
    parameters: Parameters = Field(default_factory=Parameters)
    model: str | None = None
    stream: bool | None = None  # unset: the Accept header decides
    # The Inference API's flat options (use_cache, wait_for_model), finite like every number.
    options: dict[str, bool | int | float | str | None] | None = Field(
        None, description="Accepted for Inference API compatibility and ignored."
    )


def _field(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def translate_validation_error(error: ValidationError, *, max_new_tokens_limit: int) -> ClientError:
    """The single most useful client error for a pydantic ValidationError."""
    details = error.errors(include_url=False)
    first = details[0]
    kind, loc = first["type"], tuple(first["loc"])
    name = _field(loc)
    if kind == "json_invalid":
        return InvalidRequest(
            f"request body is not valid JSON ({first['msg']}); send a JSON object",
            code="invalid_json",
        )
    finite = next((d for d in details if d["type"] == "finite_number"), None)
    if finite is not None:  # pydantic reads NaN and Infinity; JSON has no such values
        where = tuple(part for part in finite["loc"] if part not in ("float", "int"))
        return InvalidRequest(
            f"{_field(where)} is NaN or infinite, which JSON cannot hold; send a finite number",
            code="invalid_json",
            param=_field(where),
        )
    if kind in {"model_type", "model_attributes_type"} and not loc:
        return InvalidRequest("request body must be a JSON object", code="invalid_json")
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        field = str(loc[-1])
        expected = RANGES.get(field, str(first["msg"])).format(limit=max_new_tokens_limit)
        return InvalidParameter(
            f"{name} must be {expected}; got {echo(first.get('input'))}", param=name
        )
    if kind == "extra_forbidden":
        scope = Parameters if loc[:1] == ("parameters",) else ChatRequest
        allowed = ", ".join(scope.model_fields)
        return InvalidRequest(
            f"unknown field {echo(name)}; allowed here: {allowed}",
            code="unknown_field",
            param=name[:ECHO_CHARS],
        )
    return InvalidRequest(f"{name}: {first['msg']}", param=name if loc else None)


def parse_chat_request(body: bytes, *, max_new_tokens_limit: int) -> ChatRequest:
    """Parse and validate a request body; raises a ClientError naming what to fix."""
    try:
        return ChatRequest.model_validate_json(body)
    except ValidationError as exc:
        raise translate_validation_error(exc, max_new_tokens_limit=max_new_tokens_limit) from None


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
