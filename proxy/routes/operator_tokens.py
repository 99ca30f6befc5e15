"""Bearer tokens that guard operator routes (ADMIN_TOKEN, METRICS_TOKEN); wrong ones count
toward the address's failed credentials, as wrong API keys do."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from proxy.config.fields import Secret
from proxy.context import context_of
from proxy.errors import Unauthorized


async def require_bearer(request: Request, token: Secret, *, setting: str, code: str) -> None:
    """Raise Unauthorized unless the request carries ``Authorization: Bearer <token>`` (or
    RateLimited, for a wrong one, while its address has spent its failed credentials)."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        guard = context_of(request).guard
        address = guard.address(request.scope, request.headers.get("x-forwarded-for"))
        await guard.failures.refused(address)
        raise Unauthorized(
            f"send the token as Authorization: Bearer <{setting}>",
            code=code,
            headers={"WWW-Authenticate": "Bearer"},
        )
