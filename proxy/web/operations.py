"""What each endpoint documents about itself: its OpenAPI operation, declared beside the code.

An endpoint carries its ``Operation`` (``@documented`` on a function, an ``operation``
attribute on an ASGI class); ``routes/openapi.py`` walks the app's own route list and renders each
one, with the reply types of ``routes/replies.py``. A route without an operation is a test failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from msgspec import Struct, field

JSON = "application/json"

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


class Reply(Struct, frozen=True):
    """One successful answer: a JSON ``body`` type (a TypedDict), or another ``media_type``;
    with ``events``, also a Server-Sent Events stream (event names, or ``()`` for OpenAI's
    unnamed ``data:`` lines)."""

    description: str
    body: type | None = None
    media_type: str = JSON
    events: tuple[str, ...] | None = None


class Operation(Struct, frozen=True):
    """One method of one path. ``errors`` maps a status to why it happens; their body is the
    error shape of the path's front. ``auth`` names a security scheme, ``auth_optional`` when
    the call also works without it."""

    id: str
    summary: str
    replies: dict[int, Reply]
    errors: dict[int, str] = field(default_factory=dict)
    request: type | None = None
    auth: str | None = None
    auth_optional: bool = True


def documented(operation: Operation) -> Callable[[Endpoint], Endpoint]:
    """Attach ``operation`` to an endpoint function."""

    def attach(endpoint: Endpoint) -> Endpoint:
        endpoint.operation = operation  # type: ignore[attr-defined]
        return endpoint

    return attach


def operation_of(endpoint: object) -> Operation | None:
    found = getattr(endpoint, "operation", None)
    return found if isinstance(found, Operation) else None


# Why each error status can happen on a generation route.
GENERATION_ERRORS = {
    400: "malformed JSON, wrong shape, unknown field, unknown model, or a header sent twice",
    401: "a credential CALLERS asks for (an API key, a user token) is missing or wrong",
    403: "the browser's Origin is not in ALLOWED_ORIGINS",
    413: "the body is over MAX_BODY_BYTES",
    415: "the body is not application/json",
    422: "a value out of range, an empty prompt or one over MAX_PROMPT_CHARS",
    429: "a rate limit (ours or the upstream's) or too many failed credentials; see Retry-After",
    500: "a bug; the details are in the log under the request id",
    502: "the upstream failed, answered garbage, or refused our token",
    503: "the upstream is busy, starting or unavailable, the queue is full, or user tokens "
    "cannot be checked now",
    504: "the upstream did not answer in time",
}
