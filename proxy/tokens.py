"""Bearer tokens that guard operator routes (ADMIN_TOKEN, METRICS_TOKEN)."""

from __future__ import annotations

import hmac

from pydantic import SecretStr
from starlette.requests import Request

from proxy.errors import Unauthorized


def require_bearer(request: Request, token: SecretStr, *, setting: str, code: str) -> None:
    """Raise Unauthorized unless the request carries ``Authorization: Bearer <token>``."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise Unauthorized(
            f"send the token as Authorization: Bearer <{setting}>",
            code=code,
            headers={"WWW-Authenticate": "Bearer"},
        )
