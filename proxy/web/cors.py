"""CORS from ALLOWED_ORIGINS: Starlette's middleware, for requests that carry an ``Origin``."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from proxy.config.settings import Settings

CORS_HEADERS = ["Content-Type", "Authorization", "X-Request-ID", "Cache-Control", "Accept"]
EXPOSED_HEADERS = [
    "X-Request-ID", "X-Cache", "X-Upstream", "Retry-After", "Age", "Server-Timing",
    "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy",
]  # fmt: skip


def origin_matcher(origins: tuple[str, ...]) -> re.Pattern[str] | None:
    """A pattern for the allowed origins (``host:*`` is any port), or None for ``*``."""
    if "*" in origins:
        return None
    parts = []
    for origin in origins:
        if origin.endswith(":*"):
            parts.append(re.escape(origin.removesuffix(":*")) + r"(?::\d{1,5})?")
        else:
            parts.append(re.escape(origin))
    return re.compile("|".join(parts))


def cors_options(settings: Settings) -> dict[str, Any]:
    """CORSMiddleware arguments from ALLOWED_ORIGINS; ``host:*`` means any port of that host."""
    pattern = origin_matcher(settings.allowed_origins)
    return {
        "allow_origins": ["*"] if pattern is None else [],
        "allow_origin_regex": pattern.pattern if pattern is not None else None,
        "allow_methods": ["GET", "POST", "DELETE", "OPTIONS"],
        "allow_headers": CORS_HEADERS,
        "expose_headers": EXPOSED_HEADERS,
        "allow_credentials": settings.cors_allow_credentials,
        "max_age": 600,
    }


class OriginOnlyCORS:
    """Starlette's CORSMiddleware for requests that carry an ``Origin``; the rest skip it.

    Without ``Origin`` there is nothing for CORS to answer, but the middleware would still
    parse every header and wrap ``send``: a few percent of a cache hit. ``Vary: Origin``,
    which it would add, comes from ObserveMiddleware on every response.
    """

    def __init__(self, app: ASGIApp, /, **options: Any) -> None:
        self.app = app
        self.cors = CORSMiddleware(app, **options)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for key, _ in scope["headers"]:
                if key == b"origin":
                    break
            else:
                await self.app(scope, receive, send)
                return
        await self.cors(scope, receive, send)
