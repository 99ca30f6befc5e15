"""What one request did, filled in as it goes: read by the access log, metrics and
``Server-Timing``. One per request, reachable from anywhere in its task."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from msgspec import Struct


class RequestRecord(Struct):
    route: str
    started: float
    # The id its response carries as X-Request-ID (as sent, or made up).
    request_id: bytes = b""
    # With tracing: its span and the token that made it current.
    span: tuple[Any, object] | None = None
    upstream_seconds: float | None = None
    # With several upstreams: those that produced the reply, in order (two for a continued
    # stream), and every attempt as (upstream, outcome, seconds).
    upstreams: list[str] | None = None
    attempts: list[tuple[str, str, float]] | None = None
    # The request's generation fields the upstream's endpoint has no parameter for (its own
    # values applied), as X-Upstream-Ignored names them.
    ignored: tuple[str, ...] | None = None
    # How the cache answered (HIT, MISS, BYPASS, JOINED), for the access log even where the
    # caller is not shown X-Cache.
    cache: str | None = None
    # The model the upstream says it served (its own name for it), when it said.
    model: str | None = None
    # Who called: anyone, browser, key or token (never the credential itself).
    caller: str | None = None
    # Headers for the response's start that an inner layer decided (the guard's RateLimit-*),
    # added by the outermost layer as it sends it: no layer in between wraps ``send``.
    headers: list[tuple[bytes, bytes]] | None = None
    # Whether the response's start was sent (too late for another status after that).
    responded: bool = False


def served_by(default: str) -> str:
    """The upstreams this request's reply came from, as X-Upstream names them."""
    record = _CURRENT.get()
    return ", ".join(record.upstreams) if record is not None and record.upstreams else default


def served_model(default: str) -> str:
    """The model this request's reply came from, as the upstream named it, else ``default``
    (the catalogue's name)."""
    record = _CURRENT.get()
    return record.model if record is not None and record.model else default


def note_served_model(model: str) -> None:
    record = _CURRENT.get()
    if record is not None:
        record.model = model


_CURRENT: ContextVar[RequestRecord | None] = ContextVar("proxy_request_record", default=None)


def current_record() -> RequestRecord | None:
    return _CURRENT.get()


def begin(record: RequestRecord) -> None:
    _CURRENT.set(record)
