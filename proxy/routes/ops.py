"""Operational routes: liveness, readiness, the model list, and the landing page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from proxy.catalog import Catalog
from proxy.context import context_of
from proxy.errors import UpstreamNotReady
from proxy.middleware import request_id_of
from proxy.openapi import build_openapi
from proxy.responses import JSONResponse, error_body
from proxy.settings import Settings
from proxy.tokens import require_bearer

INDEX_HTML = files("proxy").joinpath("static/index.html").read_text(encoding="utf-8")


async def healthz(request: Request) -> Response:
    """Always 200 while the process serves requests; touches nothing else."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 when the upstream can take requests, else 503 with the reason."""
    gateway = context_of(request).gateway
    readiness = await gateway.ready()
    if readiness.ready:
        return JSONResponse(
            {"status": "ready", "upstream": gateway.upstream_name, "detail": readiness.detail}
        )
    error = readiness.error or UpstreamNotReady(readiness.detail)
    body = error_body(error, request_id_of(request.scope))
    body.update(status="unavailable", upstream=gateway.upstream_name)
    retry = error.headers.get("Retry-After", "10")
    return JSONResponse(body, status_code=503, headers={"Retry-After": retry})


async def models(request: Request) -> Response:
    """The catalogue: public names, Hub ids, chat or base, and generation defaults."""
    ctx = context_of(request)
    catalog = ctx.catalog
    return JSONResponse(
        {
            "models": [spec.public() for spec in catalog.models],
            "default": catalog.default.name,
            "upstream": ctx.gateway.upstream_name,
            "test_mode": ctx.gateway.upstream_name == "mock",
            "limits": {
                "max_new_tokens": ctx.settings.max_new_tokens_limit,
                "max_prompt_chars": ctx.settings.max_prompt_chars,
                "max_body_bytes": ctx.settings.max_body_bytes,
            },
        }
    )


async def metrics(request: Request) -> Response:
    """Prometheus metrics of this instance (behind METRICS_TOKEN when it is set)."""
    ctx = context_of(request)
    if ctx.settings.metrics_token is not None:
        require_bearer(
            request,
            ctx.settings.metrics_token,
            setting="METRICS_TOKEN",
            code="missing_metrics_token",
        )
    return Response(ctx.metrics.exposition(), media_type=ctx.metrics.content_type)


async def index(request: Request) -> Response:
    return HTMLResponse(INDEX_HTML)


def openapi_endpoint(
    settings: Settings, catalog: Catalog
) -> Callable[[Request], Awaitable[Response]]:
    """``GET /openapi.json``: the document for the app's settings and catalogue, rendered
    once."""
    body = orjson.dumps(build_openapi(settings, catalog))

    async def openapi(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return openapi
