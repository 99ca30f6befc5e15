"""Operator routes, protected by ADMIN_TOKEN; they do not exist (404) while it is unset."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from proxy.context import context_of
from proxy.core.cache import CacheUnavailable
from proxy.errors import CacheBackendDown, NotFound
from proxy.routes.operator_tokens import require_bearer
from proxy.routes.replies import CacheCleared
from proxy.web.operations import Operation, Reply, documented
from proxy.web.responses import JSONResponse


async def require_admin(request: Request) -> None:
    """Raise NotFound when no ADMIN_TOKEN is set, Unauthorized when the bearer is wrong."""
    token = context_of(request).settings.admin_token
    if token is None:
        raise NotFound(f"no route {request.method} {request.url.path}; see the README for the API")
    await require_bearer(request, token, setting="ADMIN_TOKEN", code="unauthorized")


@documented(
    Operation(
        "clearCache",
        "Empty the cache (Bearer ADMIN_TOKEN; 404 while it is unset)",
        replies={200: Reply("cleared", CacheCleared)},
        errors={
            401: "the admin token is missing or wrong",
            429: "too many failed credentials from this address; see Retry-After",
            404: "ADMIN_TOKEN is unset",
            503: "the cache backend is unavailable",
        },
        auth="adminToken",
        auth_optional=False,
    )
)
async def clear_cache(request: Request) -> Response:
    """DELETE /api/cache: remove every cached reply."""
    await require_admin(request)
    try:
        cleared = await context_of(request).gateway.clear_cache()
    except CacheUnavailable:
        raise CacheBackendDown(
            "the cache backend is unavailable; try again", retry_after=5
        ) from None
    reply: CacheCleared = {"status": "cleared", "entries": cleared}
    return JSONResponse(reply)
