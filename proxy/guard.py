"""Who may generate: the origin check, API keys and per-client rate limits, in front of the
generation routes. A pure ASGI wrapper: admitted requests get ``RateLimit-*`` headers on
their response; refused ones get a JSON error with the same headers."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import time

from limits import RateLimitItem, WindowStats, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.clients import ClientAddresses
from proxy.errors import Forbidden, GatewayError, RateLimited, Unauthorized
from proxy.metrics import Metrics
from proxy.responses import render_error
from proxy.settings import Settings

logger = logging.getLogger("proxy.guard")

# Rate-limit trouble (Redis down) is logged at most this often.
WARN_INTERVAL = 30.0
SHARED_RETRY_AFTER = 1.0
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


def limiter_storage(settings: Settings) -> Storage:
    if settings.redis_url:
        url = "async+" + settings.redis_url
        return RedisStorage(
            url,
            implementation="redispy",
            key_prefix=f"{settings.redis_prefix}:limits",
            wrap_exceptions=True,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )
    return MemoryStorage()


class Guard:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.origins = origin_matcher(settings.allowed_origins)
        self.keys = [key.get_secret_value().encode() for key in settings.api_keys]
        self.clients = ClientAddresses(settings.trusted_proxies)
        self.metrics = metrics
        self.items: list[RateLimitItem] = (
            parse_many(settings.rate_limits) if settings.rate_limits else []
        )
        self.storage = limiter_storage(settings) if self.items else None
        self.limiter = MovingWindowRateLimiter(self.storage) if self.storage else None
        # While a shared store is down, limits hold per instance, and the store is left
        # alone for a moment instead of costing every request its timeout.
        self.local = (
            MovingWindowRateLimiter(MemoryStorage())
            if isinstance(self.storage, RedisStorage)
            else None
        )
        self._shared_down_until = 0.0
        self._warned_at = -WARN_INTERVAL

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

    async def _count(
        self, limiter: MovingWindowRateLimiter, client: str
    ) -> tuple[RateLimitItem | None, RateLimitItem, WindowStats]:
        """Hit every limit for ``client``: (the exhausted limit or None, the limit to show,
        its window). Shown is the exhausted one, else the one with the least share left."""
        failed = None
        for item in self.items:
            if not await limiter.hit(item, client):
                failed = item
                break
        shown: tuple[RateLimitItem, WindowStats] | None = None
        for item in [failed] if failed else self.items:
            stats = await limiter.get_window_stats(item, client)
            if shown is None or stats.remaining * shown[0].amount < (
                shown[1].remaining * item.amount
            ):
                shown = (item, stats)
        assert shown is not None
        return failed, shown[0], shown[1]

    async def _limit(self, client: str) -> list[tuple[bytes, bytes]]:
        """Count one request of ``client``; its RateLimit headers, or RateLimited."""
        assert self.limiter is not None
        limiter = self.limiter
        if self.local is not None and time.monotonic() < self._shared_down_until:
            limiter = self.local
        try:
            failed, item, stats = await self._count(limiter, client)
        except Exception as exc:  # the shared store is down: limit per instance meanwhile
            now = time.monotonic()
            self._shared_down_until = now + SHARED_RETRY_AFTER
            if now - self._warned_at >= WARN_INTERVAL:
                self._warned_at = now
                logger.warning("shared rate limits unavailable, limiting per instance: %s", exc)
            if self.local is None:
                return []
            failed, item, stats = await self._count(self.local, client)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        headers = [
            (b"ratelimit-limit", str(item.amount).encode()),
            (b"ratelimit-remaining", str(stats.remaining).encode()),
            (b"ratelimit-reset", str(reset).encode()),
            (b"ratelimit-policy", f"{item.amount};w={item.get_expiry()}".encode()),
        ]
        if failed is not None:
            self.metrics.rate_limited.inc()
            raise RateLimited(
                f"rate limit reached ({item.amount} per {_window(item)}); retry in "
                f"{max(1, reset)} s",
                retry_after=max(1, reset),
                headers={k.decode(): v.decode() for k, v in headers},
            )
        return headers

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
        if self.limiter is None:
            return []
        client = key_id or "ip:" + self.clients.of(scope, found.get(b"x-forwarded-for"))
        return await self._limit(client)

    async def aclose(self) -> None:
        """Close the shared store's connections (limits has no close of its own)."""
        if isinstance(self.storage, RedisStorage):
            client = getattr(self.storage.bridge, "storage", None)
            if client is not None and hasattr(client, "aclose"):
                await client.aclose()


BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="proxy"'}


def _window(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return f"{item.multiples} {unit}s" if item.multiples > 1 else unit


class Guarded:
    """An endpoint behind the guard."""

    def __init__(self, endpoint: ASGIApp) -> None:
        self.endpoint = endpoint

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
