"""What one request did, filled in as it goes: read by the access log, metrics and
``Server-Timing``. One per request, reachable from anywhere in its task."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(slots=True)
class RequestRecord:
    route: str
    started: float
    upstream_seconds: float | None = None


_CURRENT: ContextVar[RequestRecord | None] = ContextVar("proxy_request_record", default=None)


def current_record() -> RequestRecord | None:
    return _CURRENT.get()


def begin(record: RequestRecord) -> None:
    _CURRENT.set(record)
