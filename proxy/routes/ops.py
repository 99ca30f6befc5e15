"""Operational routes: liveness, readiness, the model list, metrics, the landing page and the
OpenAPI document."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from proxy.config.settings import Settings
from proxy.context import context_of
from proxy.core.catalog import Catalog, ModelSpec
from proxy.errors import UpstreamNotReady
from proxy.routes.operator_tokens import require_bearer
from proxy.routes.replies import Alive, Catalogue, ModelCard, NotReadyReply, Ready
from proxy.web.instrument import request_id_of
from proxy.web.operations import Operation, Reply, documented
from proxy.web.responses import JSONResponse, error_body, with_headers

# Read from the package's directory, where StaticFiles serves the rest from (importlib.resources
# would import zipfile and its readers: 1.4 ms of a cold start, for an installed package that
# is always a directory).
INDEX_HTML = (Path(__file__).parents[1] / "static" / "index.html").read_text(encoding="utf-8")

# The demo page and its files: scripts, styles and fetches from this origin only (a crafted
# ?api= link cannot send a user's prompts elsewhere), no framing, no referrer, no sniffing.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "script-src 'self'; style-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_PAGE_HEADERS_RAW = [(k.lower().encode(), v.encode()) for k, v in PAGE_HEADERS.items()]


class WithPageHeaders:
    """An ASGI app (the static files) whose responses carry PAGE_HEADERS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, with_headers(send, _PAGE_HEADERS_RAW))


@documented(
    Operation(
        "healthz",
        "Liveness: 200 while the process serves",
        replies={200: Reply("alive", Alive)},
    )
)
async def healthz(request: Request) -> Response:
    """Always 200 while the process serves requests; touches nothing else."""
    alive: Alive = {"status": "ok"}
    return JSONResponse(alive)


@documented(
    Operation(
        "readyz",
        "Readiness of the upstream",
        replies={200: Reply("ready", Ready), 503: Reply("not ready: the reason", NotReadyReply)},
    )
)
async def readyz(request: Request) -> Response:
    """200 when the upstream can take requests, else 503 with the reason and Retry-After."""
    gateway = context_of(request).gateway
    readiness = await gateway.ready()
    if readiness.ready:
        ready: Ready = {
            "status": "ready",
            "upstream": gateway.upstream_name,
            "detail": readiness.detail,
            "upstreams": dict(readiness.upstreams or {gateway.upstream_name: "ready"}),
        }
        return JSONResponse(ready)
    error = readiness.error or UpstreamNotReady(readiness.detail)
    body: NotReadyReply = {
        **error_body(error, request_id_of(request.scope)),
        "status": "unavailable",
        "upstream": gateway.upstream_name,
        "upstreams": dict(readiness.upstreams or {gateway.upstream_name: "unavailable"}),
    }
    retry = error.headers.get("Retry-After", "10")
    return JSONResponse(body, status_code=503, headers={"Retry-After": retry})


@documented(
    Operation(
        "models",
        "The Llama 2 models, their Hub ids, defaults and limits",
        replies={200: Reply("the catalogue", Catalogue)},
    )
)
async def models(request: Request) -> Response:
    """The catalogue: public names, Hub ids, chat or base, and generation defaults."""
    ctx = context_of(request)
    catalog = ctx.catalog
    catalogue: Catalogue = {
        "models": [model_card(spec) for spec in catalog.models],
        "default": catalog.default.name,
        "upstream": ctx.gateway.upstream_name,
        "test_mode": ctx.gateway.upstream_name == "mock",
        "limits": {
            "max_new_tokens": ctx.settings.max_new_tokens_limit,
            "max_prompt_chars": ctx.settings.max_prompt_chars,
            "max_body_bytes": ctx.settings.max_body_bytes,
        },
    }
    return JSONResponse(catalogue)


@documented(
    Operation(
        "metrics",
        "Prometheus metrics (Bearer METRICS_TOKEN when it is set)",
        replies={200: Reply("Prometheus text format", media_type="text/plain")},
        errors={
            401: "METRICS_TOKEN is set and was not sent",
            429: "too many failed credentials from this address; see Retry-After",
        },
        auth="metricsToken",
    )
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of this instance (behind METRICS_TOKEN when it is set)."""
    ctx = context_of(request)
    if ctx.settings.metrics_token is not None:
        await require_bearer(
            request,
            ctx.settings.metrics_token,
            setting="METRICS_TOKEN",
            code="missing_metrics_token",
        )
    return Response(ctx.metrics.exposition(), media_type=ctx.metrics.content_type)


@documented(
    Operation(
        "demoPage", "The demo chat page", replies={200: Reply("HTML", media_type="text/html")}
    )
)
async def index(request: Request) -> Response:
    return HTMLResponse(INDEX_HTML, headers=PAGE_HEADERS)


def openapi_endpoint(
    settings: Settings, catalog: Catalog
) -> Callable[[Request], Awaitable[Response]]:
    """``GET /openapi.json``: the document of the app's own routes under its settings and
    catalogue, rendered on the first call (not at start-up: a cold start does not pay it)."""
    rendered: list[bytes] = []

    @documented(Operation("openapi", "This document", replies={200: Reply("OpenAPI 3.1", dict)}))
    async def openapi(request: Request) -> Response:
        if not rendered:
            from proxy.routes.openapi import build_openapi

            rendered.append(orjson.dumps(build_openapi(request.app.routes, settings, catalog)))
        return Response(rendered[0], media_type="application/json")

    return openapi


def model_card(spec: ModelSpec) -> ModelCard:
    """One model as ``GET /api/models`` shows it."""
    return {
        "id": spec.name,
        "hub_id": spec.hub_id,
        "type": "chat" if spec.chat else "base",
        "context_length": spec.context_length,
        "defaults": {
            "max_new_tokens": spec.max_new_tokens,
            "temperature": spec.temperature,
            "top_p": spec.top_p,
            "do_sample": spec.do_sample,
        },
    }
