"""Which of a Gradio endpoint's parameters takes which of the gateway's fields.

Our fields (``Source``) and the names Spaces commonly give the matching parameters; a
parameter is matched by its name, then its label, then the start of its label, and only
when its type fits the field. ``gradio_plan`` builds an endpoint's plan from the match.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from proxy.upstreams.gradio_app import TEXT_COMPONENTS, AppAPI, is_chat_interface

Source = Literal[
    "prompt",
    "system",
    "history",
    "model",
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "do_sample",
]

# Our field -> the names Spaces commonly give the matching parameter, most specific first.
SYNONYMS: dict[Source, tuple[str, ...]] = {
    "prompt": (
        "inputs",
        "prompt",
        "message",
        "user_message",
        "text",
        "query",
        "input",
        "question",
        "msg",
    ),
    "system": (
        "system_prompt",
        "system_message",
        "system",
        "system_instruction",
        "system_instructions",
        "system_msg",
        "sys_prompt",
        "sys_msg",
    ),
    "history": ("history", "chat_history", "chatbot"),
    "model": ("model", "model_name"),
    "max_new_tokens": ("max_new_tokens", "max_tokens", "max_length", "max_output_tokens"),
    "temperature": ("temperature", "temp"),
    "top_p": ("top_p",),
    "top_k": ("top_k",),
    "repetition_penalty": ("repetition_penalty", "rep_penalty", "repeat_penalty"),
    "do_sample": ("do_sample",),
}
NUMERIC: frozenset[Source] = frozenset(
    {"max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty"}
)
# The generation fields a request carries, as the README's mapping table names them.
GENERATION_FIELDS: tuple[Source, ...] = (
    "max_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "do_sample",
)


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _type(param: Mapping[str, Any]) -> str:
    kind = param.get("type")
    return str(kind.get("type", "")) if isinstance(kind, dict) else ""


def _fits(source: Source, param: Mapping[str, Any]) -> bool:
    kind = _type(param)
    if source in NUMERIC:
        return kind in ("number", "integer")
    if source == "do_sample":
        return kind == "boolean"
    if source == "history":
        return kind == "array" or str(param.get("component", "")).lower() == "chatbot"
    return kind in ("string", "")


def _by_name(key: tuple[str, str], synonym: str) -> bool:
    return key[0] == synonym


def _by_label(key: tuple[str, str], synonym: str) -> bool:
    return key[1] == synonym


def _by_label_start(key: tuple[str, str], synonym: str) -> bool:
    return key[1].startswith(synonym + "_")  # "Top-p (nucleus sampling)"


_MATCHES = (_by_name, _by_label, _by_label_start)


def sources_of(app: AppAPI, api_name: str) -> list[Source | None]:
    """The source of each parameter; the prompt's is None in the first place when no
    parameter can be told to take it (the list then has a leading None)."""
    params = app.params(api_name)
    keys = [
        (_normalise(str(p.get("parameter_name") or "")), _normalise(str(p.get("label") or "")))
        for p in params
    ]
    sources: list[Source | None] = [None] * len(params)
    if params and is_chat_interface(app, api_name):
        sources[0] = "prompt"  # a ChatInterface's first API input is always the message
    for i, p in enumerate(params):
        if str(p.get("component", "")).lower() == "chatbot" and "history" not in sources:
            sources[i] = "history"
    for match in _MATCHES:
        for source, names in SYNONYMS.items():
            if source in sources:
                continue
            for synonym in names:
                hit = next(
                    (
                        i
                        for i, key in enumerate(keys)
                        if not sources[i] and match(key, synonym) and _fits(source, params[i])
                    ),
                    None,
                )
                if hit is not None:
                    sources[hit] = source
                    break
    if "prompt" not in sources:
        # The only free text box left is the message (a Blocks chat's ``user(m, h)``).
        texts = [
            i
            for i, p in enumerate(params)
            if not sources[i]
            and str(p.get("component", "")).lower() in TEXT_COMPONENTS
            and _fits("prompt", p)
        ]
        if len(texts) == 1:
            sources[texts[0]] = "prompt"
    if "prompt" not in sources:
        return [None, *sources]
    return sources
