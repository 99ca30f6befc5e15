"""The JSON bodies the gateway answers with, as TypedDicts.

The routes build their replies as these types (mypy checks every key and value), and
``openapi.py`` derives the document's reply schemas from the same types, so the two cannot
drift. Nothing but typing is imported here: the hot path pays nothing for it.
"""

from __future__ import annotations

from typing import Literal, TypedDict

from proxy.core.generation import FinishReason
from proxy.web.responses import ErrorReply


class NotReadyReply(ErrorReply):
    """``GET /readyz`` while the upstream cannot take requests."""

    status: Literal["unavailable"]
    upstream: str
    # Each upstream's state: ready, cold, cooling or open (unavailable for a single one).
    upstreams: dict[str, str]


class CompletionUsage(TypedDict):
    """Token counts: the upstream's own when it reported them, else estimated (about four
    characters a token), and ``estimated`` says which."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: bool


class ChatReply(TypedDict):
    """``POST /api/chat`` as JSON: the seed's reply, with the usage."""

    generated_text: str
    model: str
    usage: CompletionUsage


class DoneEvent(ChatReply):
    """The data of the ``done`` event that ends an ``/api/chat`` stream."""

    finish_reason: FinishReason
    # The upstream that produced the reply; with several, those that did, in order.
    upstream: str


class AssistantMessage(TypedDict):
    role: Literal["assistant"]
    content: str


class CompletionChoice(TypedDict):
    index: int
    message: AssistantMessage
    finish_reason: FinishReason
    logprobs: None


class ChatCompletion(TypedDict):
    """``POST /v1/chat/completions`` as JSON, in OpenAI's shape."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage


class ModelDefaults(TypedDict):
    max_new_tokens: int
    temperature: float
    top_p: float
    do_sample: bool


class ModelCard(TypedDict):
    id: str
    hub_id: str
    type: Literal["chat", "base"]
    context_length: int
    defaults: ModelDefaults


class Limits(TypedDict):
    max_new_tokens: int
    max_prompt_chars: int
    max_body_bytes: int


class Catalogue(TypedDict):
    """``GET /api/models``: the models, their Hub ids, defaults and this instance's limits."""

    models: list[ModelCard]
    default: str
    upstream: str
    test_mode: bool
    limits: Limits


class OpenAIModel(TypedDict):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class OpenAIModelList(TypedDict):
    """``GET /v1/models``: the models in OpenAI's list shape."""

    object: Literal["list"]
    data: list[OpenAIModel]


class Alive(TypedDict):
    status: Literal["ok"]


class Ready(TypedDict):
    status: Literal["ready"]
    upstream: str
    detail: str
    # Each upstream's state (ready, cold, cooling, open), by name.
    upstreams: dict[str, str]


class CacheCleared(TypedDict):
    status: Literal["cleared"]
    entries: int
