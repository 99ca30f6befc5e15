"""Who may generate: the origin check, API keys and the per-client rate limits (counted by
``rate_limits.RateLimits``), in front of the generation routes. A pure ASGI wrapper:
admitted requests get ``RateLimit-*`` headers on their response; refused ones get a JSON
error with the same headers."""

from __future__ import annotations

import hashlib
import hmac
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.clients import ClientAddresses
from proxy.errors import Forbidden, GatewayError, Unauthorized
from proxy.operations import operation_of
from proxy.rate_limits import RateLimits
from proxy.responses import render_error
from proxy.settings import Settings

_WANTED = (b"origin", b"authorization", b"x-forwarded-for")


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


class Guard:
    def __init__(self, settings: Settings, limits: RateLimits | None = None) -> None:
        self.origins = origin_matcher(settings.allowed_origins)
        self.keys = [key.get_secret_value().encode() for key in settings.api_keys]
        self.clients = ClientAddresses(settings.trusted_proxies)
        self.limits = limits

    def allowed_origin(self, origin: str) -> bool:
        return self.origins is None or self.origins.fullmatch(origin) is not None

    def _key_id(self, authorization: str | None, origin: str | None) -> str | None:
        """The client's identity from its API key; raises when keys are required and absent.

        Browsers (an allowed Origin) need no key: the origin allow-list is their check.
        """
        if not self.keys:
            return None
        token = None
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip().encode()
        if token:
            matched = False
            for key in self.keys:  # every key compared, in constant time each
                matched |= hmac.compare_digest(token, key)
            if matched:
                return "key:" + hashlib.sha256(token).hexdigest()[:16]
            raise Unauthorized(
                "the API key is not valid", code="invalid_api_key", headers=BEARER_CHALLENGE
            )
        if origin is not None:
            return None  # a browser on an allowed origin
        raise Unauthorized(
            "this gateway needs an API key: send Authorization: Bearer <key>",
            headers=BEARER_CHALLENGE,
        )

    async def admit(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """Headers for the response of an admitted request; raises GatewayError otherwise."""
        found = {k: v.decode("latin-1") for k, v in scope["headers"] if k in _WANTED}
        origin = found.get(b"origin")
        if origin is not None and not self.allowed_origin(origin):
            raise Forbidden(
                f"the origin {origin[:100]} is not allowed; the gateway's operator can add it "
                "to ALLOWED_ORIGINS"
            )
        key_id = self._key_id(found.get(b"authorization"), origin)
        if self.limits is None:
            return []
        client = key_id or "ip:" + self.clients.of(scope, found.get(b"x-forwarded-for"))
        return await self.limits.hit(client)


BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="proxy"'}


class Guarded:
    """An endpoint behind the guard."""

    def __init__(self, endpoint: ASGIApp) -> None:
        self.endpoint = endpoint
        self.operation = operation_of(endpoint)  # what the endpoint documents, guarded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guard: Guard = scope["state"]["ctx"].guard
        try:
            extra = await guard.admit(scope)
        except GatewayError as exc:
            request_id = scope["state"].get("request_id")
            await render_error(exc, scope, request_id)(scope, receive, send)
            return
        if not extra:
            await self.endpoint(scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.endpoint(scope, receive, send_with_limits)
