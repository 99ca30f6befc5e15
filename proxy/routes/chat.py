"""POST /api/chat and /api/predict: the seed's API, answered as JSON or as Server-Sent Events."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.cache import parse_cache_control
from proxy.context import context_of
from proxy.errors import GatewayError, PayloadTooLarge, UnsupportedMediaType
from proxy.generation import GenerationRequest
from proxy.middleware import request_id_of
from proxy.responses import JSONResponse, error_body
from proxy.schemas import parse_chat_request, to_generation_request
from proxy.sse import frame

logger = logging.getLogger("proxy.app")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def read_json_body(request: Request, limit: int) -> bytes:
    """The raw body of a JSON request, refusing other media types and bodies over ``limit``."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as JSON with Content-Type: application/json "
            f"(got {media_type[:60] or 'no Content-Type'})"
        )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _events(
    deltas: AsyncGenerator[str, None], req: GenerationRequest, request_id: str | None
) -> AsyncIterator[bytes]:
    parts: list[str] = []
    try:
        async with aclosing(deltas):
            async for delta in deltas:
                parts.append(delta)
                yield frame("token", {"text": delta})
    except GatewayError as exc:
        yield frame("error", error_body(exc, request_id))
        return
    except Exception:
        logger.exception("stream failed in request %s", request_id)
        yield frame("error", error_body(GatewayError("internal error"), request_id))
        return
    final = {"generated_text": "".join(parts), "model": req.model.name, "finish_reason": "stop"}
    yield frame("done", final)


class ChatEndpoint:
    """``POST /api/chat`` and ``/api/predict`` as a plain ASGI endpoint: the hottest route skips
    Starlette's per-request function wrapper; errors still reach the app's handlers."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await chat(request)
        await response(scope, receive, send)


async def chat(request: Request) -> Response:
    """Generate a reply for ``inputs`` or ``messages``; stream it when asked to."""
    ctx = context_of(request)
    settings = ctx.settings
    body = await read_json_body(request, settings.max_body_bytes)
    parsed = parse_chat_request(body, max_new_tokens_limit=settings.max_new_tokens_limit)
    wants_stream = parsed.stream or "text/event-stream" in request.headers.get("accept", "")
    req = to_generation_request(
        parsed,
        ctx.gateway.catalog,
        max_prompt_chars=settings.max_prompt_chars,
        max_new_tokens_limit=settings.max_new_tokens_limit,
        system_prompt=settings.system_prompt,
        stream=wants_stream,
    )
    policy = parse_cache_control(request.headers.get("cache-control", ""))
    if wants_stream:
        served_stream = await ctx.gateway.stream(req, policy)
        headers = _cache_headers(ctx.gateway.upstream_name, served_stream.cache, served_stream.age)
        events = _events(served_stream.deltas, req, request_id_of(request.scope))
        return StreamingResponse(
            events, media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
        )
    served = await ctx.gateway.generate(req, policy)
    generation = served.generation
    return JSONResponse(
        {"generated_text": generation.text, "model": generation.model},
        headers=_cache_headers(generation.upstream, served.cache, served.age),
    )


def _cache_headers(upstream: str, cache: str, age: int | None) -> dict[str, str]:
    headers = {"X-Upstream": upstream, "X-Cache": cache}
    if age is not None:
        headers["Age"] = str(age)
    return headers
