"""The composition root: ``create_app`` builds every part from the settings and declares the
request path (middleware, routes, lifespan) in one place."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from proxy.access.guard import Guard
from proxy.access.rate_limits import RateLimits
from proxy.config.settings import Settings
from proxy.context import AppContext
from proxy.core.cache import CacheBackend, MemoryCache
from proxy.core.catalog import Catalog
from proxy.core.gateway import Gateway
from proxy.observe.metrics import Metrics
from proxy.observe.redaction import Redactor
from proxy.routes import admin, chat, openai_api, ops
from proxy.routing.breaker import CircuitBreaker
from proxy.routing.resilient import ResilientUpstream
from proxy.upstreams import UPSTREAMS, Upstream, build_upstream
from proxy.web.cors import OriginHeaders, OriginOnlyCORS, cors_options
from proxy.web.dispatch import GatewayApp, HotRoute
from proxy.web.instrument import ObserveMiddleware, Observer
from proxy.web.last_error import EXCEPTION_HANDLERS, LastErrorMiddleware

if TYPE_CHECKING:
    from proxy.access.user_tokens import UserTokens
    from proxy.observe.tracing import Tracing

logger = logging.getLogger("proxy.app")

# Consecutive failures that would open a breaker that must not open.
NEVER = 2**62


def build_cache(settings: Settings) -> CacheBackend | None:
    """The cache the settings select: none, Redis when REDIS_URL is set, else memory."""
    if not settings.cache_enabled:
        return None
    if settings.redis_url:
        from proxy.core.redis_cache import RedisCache  # redis only when configured

        return RedisCache(
            settings.redis_url,
            ttl=settings.cache_ttl,
            lock_ttl=settings.cache_lock_timeout,
            prefix=settings.redis_prefix,
        )
    return MemoryCache(
        max_entries=settings.cache_max_entries,
        max_bytes=settings.cache_max_bytes,
        ttl=settings.cache_ttl,
    )


def build_rate_limits(
    settings: Settings, metrics: Metrics, stack: AsyncExitStack
) -> RateLimits | None:
    """RATE_LIMITS counted in memory, or in Redis when REDIS_URL is set; the Redis
    connections are closed when ``stack`` closes."""
    if not settings.rate_limits:
        return None
    if not settings.redis_url:
        return RateLimits(settings.rate_limits, metrics=metrics)
    import redis.asyncio as redis  # redis and limits only when configured
    from limits.aio.storage import RedisStorage

    from proxy.access.shared_windows import SharedWindows

    pool = redis.ConnectionPool.from_url(
        settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5
    )
    stack.push_async_callback(pool.aclose)
    shared = RedisStorage(
        "async+" + settings.redis_url,
        implementation="redispy",
        key_prefix=f"{settings.redis_prefix}:limits",
        wrap_exceptions=True,
        connection_pool=pool,  # type: ignore[arg-type]  # documented; typed too narrowly
    )
    return RateLimits(
        settings.rate_limits, SharedWindows(settings.rate_limits, shared), metrics=metrics
    )


def build_user_tokens(settings: Settings) -> UserTokens | None:
    """The verifier of signed user tokens, when JWT_SECRET or JWT_JWKS_URL is set."""
    if not settings.jwt_configured:
        return None
    from proxy.access.user_tokens import UserTokens  # PyJWT only when configured

    return UserTokens(
        secret=settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
        jwks_url=settings.jwt_jwks_url,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        algorithms=settings.accepted_jwt_algorithms,
        refresh=settings.jwt_jwks_refresh,
        max_lifetime=settings.jwt_max_lifetime,
    )


def build_resilient_upstream(
    settings: Settings, metrics: Metrics, tracing: Tracing | None = None
) -> Upstream:
    """The configured adapter behind the circuit breaker and the concurrency bound, or with
    UPSTREAMS_FILE, the router between several of them."""
    if settings.upstream_entries:
        return build_router(settings, metrics, tracing)
    return build_upstream_stack(settings, metrics, tracing=tracing)


def build_tracing(settings: Settings, metrics: Metrics) -> Tracing | None:
    """OpenTelemetry traces when OTEL_EXPORTER_OTLP_ENDPOINT is set (imported only then)."""
    if settings.traces_endpoint is None:
        return None
    from proxy.observe.tracing import Tracing  # the SDK only when configured

    headers = settings.otel_exporter_otlp_headers
    return Tracing(
        settings.traces_endpoint,
        headers=headers.get_secret_value() if headers else None,
        service=settings.otel_service_name,
        sampler=settings.otel_traces_sampler,
        ratio=settings.otel_traces_sampler_arg,
        content=settings.trace_content,
        secrets=settings.secrets,
        dropped=metrics.trace_spans_dropped,
    )


def build_router(settings: Settings, metrics: Metrics, tracing: Tracing | None = None) -> Upstream:
    """Every upstream of UPSTREAMS_FILE, each behind its own breaker and bound, routed."""
    from proxy.routing.members import Member
    from proxy.routing.router import Router

    members = []
    for entry in settings.upstream_entries:
        own = settings.for_upstream(entry)
        members.append(
            Member(
                entry.name,
                # The router's wait decides when a failed upstream is tried again; its
                # breaker opens only when its table asks for one (circuit_failures).
                build_upstream_stack(
                    own,
                    metrics,
                    breaker_opens="circuit_failures" in entry.overrides(),
                    tracing=tracing,
                    label=entry.name,
                ),
                frozenset(entry.models),
                priority=entry.priority,
                weight=entry.weight,
                # Raw-prompt upstreams continue a partial answer; an OpenAI-compatible
                # one only when it declares assistant prefill.
                can_continue=entry.kind in ("gradio", "tgi") or entry.assistant_prefill,
            )
        )
    return Router(
        members,
        metrics=metrics.routing(),
        rounds=1 + settings.upstream_retries,
        total_timeout=settings.upstream_timeout,
        cooldown=settings.upstream_cooldown,
        wake_interval=settings.upstream_wake_interval,
        failover_first_token_timeout=settings.failover_first_token_timeout,
    )


def build_upstream_stack(
    settings: Settings,
    metrics: Metrics,
    *,
    breaker_opens: bool = True,
    tracing: Tracing | None = None,
    label: str | None = None,
) -> ResilientUpstream:
    """One adapter behind its circuit breaker and concurrency bound; with tracing, each call
    a span, and each of its HTTP requests carrying that span's ``traceparent``."""
    upstream = build_upstream(settings)
    if tracing is not None and hasattr(upstream, "inject"):  # the HTTP adapters
        setattr(upstream, "inject", tracing.inject)  # noqa: B010
    stage = None
    if settings.space_id and settings.effective_upstream == "gradio":
        from proxy.upstreams.hub import SpaceStage  # the Hub client only for a Space

        stage = SpaceStage(settings.hub_url, settings.space_id, token=settings.hf_token_value)
    stack = ResilientUpstream(
        upstream,
        breaker=CircuitBreaker(
            failures=settings.circuit_failures if breaker_opens else NEVER,
            cooldown=settings.circuit_cooldown,
            probe_interval=settings.circuit_probe_interval,
        ),
        max_concurrency=settings.max_concurrency,
        queue_timeout=settings.queue_timeout,
        metrics=metrics,
        stage=stage,
    )
    if tracing is not None:
        from proxy.observe.tracing import Attempts

        stack.attempts = Attempts(tracing, label or upstream.name, upstream.name)
    return stack


def build_fallback(settings: Settings) -> Upstream | None:
    """The mock, when FALLBACK=mock and a real upstream is configured."""
    if settings.fallback != "mock" or (
        settings.effective_upstream == "mock" and not settings.upstream_entries
    ):
        return None
    return UPSTREAMS["mock"](settings)


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the gateway app. Nothing is connected until the lifespan starts."""
    settings = settings or Settings()

    metrics = Metrics(multiprocess_dir=settings.prometheus_multiproc_dir)
    tracing = build_tracing(settings, metrics)
    catalog = Catalog(default=settings.default_model)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            gateway = Gateway(
                build_resilient_upstream(settings, metrics, tracing),
                cache=build_cache(settings),
                metrics=metrics,
                lock_timeout=settings.cache_lock_timeout,
                flight_timeout=settings.upstream_timeout,
                fallback=build_fallback(settings),
                secrets=Redactor(settings.secrets),
                tracing=tracing,
            )
            if tracing is not None:
                stack.callback(tracing.shutdown)  # runs last: the last spans are flushed
            stack.callback(metrics.close)
            guard = Guard(
                settings,
                build_rate_limits(settings, metrics, stack),
                users=build_user_tokens(settings),
            )
            if settings.upstream_entries:
                logger.info(
                    "upstreams: %s",
                    ", ".join(
                        f"{e.name} ({e.kind}, priority {e.priority}, weight {e.weight})"
                        for e in settings.upstream_entries
                    ),
                )
            elif gateway.upstream_name == "mock":
                logger.warning(
                    "TEST MODE: no upstream configured (UPSTREAM_URL unset or TEST_MODE=1); "
                    "replies come from the built-in mock and are labelled X-Upstream: mock"
                )
            else:
                logger.info("upstream: %s %s", gateway.upstream_name, settings.upstream_url)
            stack.push_async_callback(gateway.aclose)
            await gateway.start()
            yield {
                "ctx": AppContext(
                    settings=settings,
                    catalog=catalog,
                    gateway=gateway,
                    metrics=metrics,
                    guard=guard,
                    tracing=tracing,
                )
            }

    observer = Observer(metrics, access_log=settings.access_log, tracing=tracing)
    cors = cors_options(settings)
    # The generation routes, each in one frame before Starlette's layers (web/dispatch.py).
    origin_headers = OriginHeaders(**cors)
    hot = {
        path: HotRoute(endpoint.respond, endpoint.operation, observer=observer, cors=origin_headers)
        for path, endpoint in (
            ("/api/chat", chat.ChatEndpoint()),
            ("/api/predict", chat.ChatEndpoint("predict")),
            ("/v1/chat/completions", openai_api.CompletionsEndpoint()),
        )
    }
    routes = [
        Route("/", ops.index, methods=["GET"]),
        Route("/api/chat", hot["/api/chat"], methods=["POST"]),
        Route("/api/predict", hot["/api/predict"], methods=["POST"]),
        Route("/api/models", ops.models, methods=["GET"]),
        Route("/v1/chat/completions", hot["/v1/chat/completions"], methods=["POST"]),
        Route("/v1/models", openai_api.models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", openai_api.model, methods=["GET"]),
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/api/cache", admin.clear_cache, methods=["DELETE"]),
        Route("/openapi.json", ops.openapi_endpoint(settings, catalog), methods=["GET"]),
        Mount(
            "/static",
            ops.WithPageHeaders(StaticFiles(packages=[("proxy", "static")])),
            name="static",
        ),
    ]
    middleware = [
        Middleware(ObserveMiddleware, observer=observer),
        Middleware(OriginOnlyCORS, **cors),
        Middleware(LastErrorMiddleware),
    ]
    app = GatewayApp(
        routes=routes,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    # No redirect from /api/chat/ to /api/chat: its Location would be built from the
    # client's Host header, and a POST should not be redirected anyway. A 404 says what to fix.
    app.router.redirect_slashes = False
    app.serve_hot(hot)
    return app
