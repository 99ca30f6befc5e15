"""Request bodies for tests that build a GenerationRequest without an HTTP round trip."""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.routes.bodies import ChatRequest


def chat_body(**fields: Any) -> ChatRequest:
    """A ChatRequest from plain JSON-like values, validated as a request body is."""
    return msgspec.convert(fields, ChatRequest)
