"""CORS from ALLOWED_ORIGINS: Starlette's middleware, for requests that carry an ``Origin``;
for the hot routes, the headers it would add to an answer, decided from its own state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.access.origins import origin_matcher

if TYPE_CHECKING:
    from proxy.config.settings import Settings

CORS_HEADERS = ["Content-Type", "Authorization", "X-Request-ID", "Cache-Control", "Accept"]
EXPOSED_HEADERS = [
    "X-Request-ID", "X-Cache", "X-Upstream", "Retry-After", "Age", "Server-Timing",
    "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy",
]  # fmt: skip


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


class OriginHeaders:
    """What Starlette's CORSMiddleware adds to the answer of a request with an ``Origin``
    that is not a preflight (the only kind a ``POST`` is), taken from that middleware's own
    state once: its simple headers, and ``Access-Control-Allow-Origin`` as it decides it.
    The hot routes add these instead of wrapping ``send`` in the middleware; ``Vary: Origin``
    comes from the observing step on every answer, as it does after the middleware."""

    def __init__(self, **options: Any) -> None:
        cors = CORSMiddleware(_never_called, **options)
        self._allowed = cors.is_allowed_origin
        self._simple = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in cors.simple_headers.items()
            if name != "Access-Control-Allow-Origin"
        ]
        self._any = cors.allow_all_origins
        # Any origin without credentials: ``*``; with credentials, or an allowed one of a
        # list: the origin itself.
        self._star = cors.allow_all_origins and not cors.allow_credentials

    def of(self, origin: bytes) -> list[tuple[bytes, bytes]]:
        headers = self._simple.copy()
        if self._star:
            headers.append((b"access-control-allow-origin", b"*"))
        elif self._any or self._allowed(origin.decode("latin-1")):
            headers.append((b"access-control-allow-origin", origin))
        return headers


async def _never_called(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("OriginHeaders only reads the middleware's decisions")
