"""POST /api/chat and /api/predict: the seed's API, answered as JSON or as Server-Sent Events."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.access.guard import Caller
from proxy.context import AppContext
from proxy.core.cache import parse_cache_control
from proxy.core.generation import Chunk, FinishReason, GenerationRequest, Usage
from proxy.errors import GatewayError, PayloadTooLarge, UnsupportedMediaType
from proxy.observe.record import current_record, served_by
from proxy.replies import ChatReply, DoneEvent
from proxy.routes.common import usage_of
from proxy.schemas import ChatRequest, parse_chat_request, to_generation_request
from proxy.web.instrument import request_id_of
from proxy.web.operations import GENERATION_ERRORS, Operation, Reply
from proxy.web.responses import JSONResponse, error_body
from proxy.web.sse import frame

logger = logging.getLogger("proxy.app")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# The request headers this route reads, found in one pass over the raw list: Starlette's
# Headers.get scans and decodes every header per lookup, and a missing one raises inside.
_WANTED = (b"content-type", b"content-length", b"accept", b"cache-control")


def _wanted_headers(scope: Scope) -> dict[bytes, str]:
    return {k: v.decode("latin-1") for k, v in scope["headers"] if k in _WANTED}


async def read_json_body(headers: dict[bytes, str], receive: Receive, limit: int) -> bytes:
    """The raw body of a JSON request, refusing other media types and bodies over ``limit``.

    Raises ClientDisconnect when the client leaves before the body arrived.
    """
    media_type = headers.get(b"content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as JSON with Content-Type: application/json "
            f"(got {media_type[:60] or 'no Content-Type'})"
        )
    declared = headers.get(b"content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is over the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over the {limit}-byte limit")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _events(
    chunks: AsyncGenerator[Chunk, None],
    req: GenerationRequest,
    request_id: str | None,
    upstream: str,
) -> AsyncIterator[bytes]:
    """SSE frames: ``token`` per delta, ``replace`` when the upstream rewrote its text, then
    ``done`` with the whole text and the upstreams it came from (two when another one
    continued a broken stream), or ``error`` if the stream failed after it started."""
    text = ""
    finish: FinishReason = "stop"
    usage: Usage | None = None
    try:
        async with aclosing(chunks):
            async for chunk in chunks:
                finish = chunk.finish_reason or finish
                usage = chunk.usage or usage
                if chunk.replace:
                    text = chunk.text
                    yield frame("replace", {"text": chunk.text})
                elif chunk.text:
                    text += chunk.text
                    yield frame("token", {"text": chunk.text})
    except GatewayError as exc:
        yield frame("error", error_body(exc, request_id))
        return
    except Exception:
        logger.exception("stream failed in request %s", request_id)
        yield frame("error", error_body(GatewayError("internal error"), request_id))
        return
    done: DoneEvent = {
        "generated_text": text,
        "model": req.model.name,
        "usage": usage_of(req, text, usage),
        "finish_reason": finish,
        "upstream": served_by(upstream),
    }
    yield frame("done", done)


def chat_operation(operation_id: str) -> Operation:
    return Operation(
        operation_id,
        "Generate a reply (the seed's API), as JSON or Server-Sent Events",
        replies={
            200: Reply(
                "the reply; with stream or Accept: text/event-stream, SSE events token, "
                "replace, done or error",
                ChatReply,
                events=("token", "replace", "done", "error"),
            )
        },
        errors=GENERATION_ERRORS,
        request=ChatRequest,
        auth="apiKey",
    )


class ChatEndpoint:
    """``POST /api/chat`` and ``/api/predict``: generate a reply for ``inputs`` or ``messages``,
    as JSON or, when asked to, as Server-Sent Events.

    A plain ASGI endpoint: the hottest route skips Starlette's per-request wrappers. Errors
    are raised to the app's handlers as for any route.
    """

    def __init__(self, operation_id: str = "chat") -> None:
        self.operation = chat_operation(operation_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await chat(scope, receive)
        except ClientDisconnect:
            return  # nobody is left to answer
        await response(scope, receive, send)


def _quality(params: list[str]) -> float:
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return max(0.0, min(1.0, float(value)))
            except ValueError:
                return 0.0
    return 1.0


# How specifically a media range names JSON (the most specific one gives JSON's q).
_JSON_RANGES = {"application/json": 2, "application/*": 1, "*/*": 0}


def prefers_events(accept: str) -> bool:
    """Whether ``Accept`` prefers ``text/event-stream`` to JSON, by its q-values. Only a
    stream named explicitly counts (``*/*`` is JSON); a tie goes to JSON."""
    if "event-stream" not in accept:
        return False
    events, json = 0.0, 0.0
    json_specificity = -1
    for item in accept.split(","):
        media, *params = item.split(";")
        media = media.strip().lower()
        q = _quality(params)
        if media == "text/event-stream":
            events = max(events, q)
        specificity = _JSON_RANGES.get(media, -1)
        if specificity > json_specificity:
            json, json_specificity = q, specificity
    return events > 0 and events > json


def generation_request(
    body: ChatRequest, ctx: AppContext, *, stream: bool, cache_scope: str = ""
) -> GenerationRequest:
    """``body`` normalised under this app's settings (model, limits, system prompt)."""
    settings = ctx.settings
    return to_generation_request(
        body,
        ctx.catalog,
        max_prompt_chars=settings.max_prompt_chars,
        max_new_tokens_limit=settings.max_new_tokens_limit,
        system_prompt=settings.system_prompt,
        stream=stream,
        cache_scope=cache_scope,
    )


def cache_view(scope: Scope, ctx: AppContext) -> tuple[str, bool]:
    """(whose cache entries the request uses, whether its caller sees X-Cache and Age).

    With CACHE_SCOPE=caller every caller has entries of its own (its key, user or address) and
    may see their state. With CACHE_SCOPE=shared, X-Cache and Age would tell a caller whether
    someone else asked the same question, so only callers with a credential see them.
    """
    caller: Caller | None = scope["state"].get("caller")
    if ctx.settings.cache_scope == "shared":
        return "", caller is not None and caller.trusted
    return (caller.identity if caller is not None else ""), True


async def chat(scope: Scope, receive: Receive) -> Response:
    ctx: AppContext = scope["state"]["ctx"]
    settings = ctx.settings
    headers = _wanted_headers(scope)
    body = await read_json_body(headers, receive, settings.max_body_bytes)
    parsed = parse_chat_request(body, max_new_tokens_limit=settings.max_new_tokens_limit)
    stream = parsed.stream
    wants_stream = stream if stream is not None else prefers_events(headers.get(b"accept", ""))
    cache_scope, show_cache = cache_view(scope, ctx)
    req = generation_request(parsed, ctx, stream=wants_stream, cache_scope=cache_scope)
    policy = parse_cache_control(headers.get(b"cache-control", ""))
    if wants_stream:
        served_stream = await ctx.gateway.stream(req, policy)
        cache_headers = cache_headers_of(
            served_stream.upstream, served_stream.cache, served_stream.age, show=show_cache
        )
        events = _events(served_stream.chunks, req, request_id_of(scope), served_stream.upstream)
        return StreamingResponse(
            events, media_type="text/event-stream", headers={**SSE_HEADERS, **cache_headers}
        )
    served = await ctx.gateway.generate(req, policy)
    generation = served.generation
    reply: ChatReply = {
        "generated_text": generation.text,
        "model": generation.model,
        "usage": usage_of(req, generation.text, generation.usage),
    }
    return JSONResponse(
        reply,
        headers=cache_headers_of(generation.upstream, served.cache, served.age, show=show_cache),
    )


def cache_headers_of(
    upstream: str, cache: str, age: int | None, *, show: bool = True
) -> dict[str, str]:
    """X-Upstream (and X-Upstream-Ignored when the upstream could not take some of the
    request's fields), and when ``show``, X-Cache and Age."""
    headers = {"X-Upstream": upstream}
    record = current_record()
    if record is not None and record.ignored:
        headers["X-Upstream-Ignored"] = ", ".join(record.ignored)
    if not show:
        return headers
    headers["X-Cache"] = cache
    if age is not None:
        headers["Age"] = str(age)
    return headers
