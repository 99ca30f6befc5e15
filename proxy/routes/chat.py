"""POST /api/chat and /api/predict: the seed's API, answered as JSON or as Server-Sent Events."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

import orjson
from msgspec import Struct, field
from starlette.responses import Response
from starlette.types import Receive, Scope

from proxy.context import AppContext
from proxy.core.cache import CachedGeneration, parse_cache_control
from proxy.core.generation import Chunk, GenerationRequest
from proxy.errors import GatewayError
from proxy.observe.record import served_by, served_model
from proxy.routes.bodies import ChatRequest, parse_chat_request
from proxy.routes.common import (
    StreamSoFar,
    cache_headers_of,
    cache_view,
    event_stream,
    generation_request,
    read_json_body,
    usage_of,
    wanted_headers,
)
from proxy.routes.plans import Plans
from proxy.routes.replies import ChatReply, DoneEvent
from proxy.web.instrument import request_id_of
from proxy.web.operations import GENERATION_ERRORS, Operation, Reply
from proxy.web.responses import JSONResponse, error_body
from proxy.web.sse import frame, last_frame

logger = logging.getLogger("proxy.app")


async def _events(
    chunks: AsyncGenerator[Chunk, None],
    req: GenerationRequest,
    request_id: str | None,
    upstream: str,
) -> AsyncIterator[bytes]:
    """SSE frames: ``token`` per delta, ``replace`` when the upstream rewrote its text, then
    ``done`` with the whole text and the upstreams it came from (two when another one
    continued a broken stream), or ``error`` if the stream failed after it started."""
    so_far = StreamSoFar()
    try:
        async with aclosing(chunks):
            async for chunk in chunks:
                so_far.add(chunk)
                if chunk.replace:
                    yield frame("replace", {"text": chunk.text})
                elif chunk.text:
                    yield frame("token", {"text": chunk.text})
    except GatewayError as exc:
        yield last_frame("error", error_body(exc, request_id))
        return
    except Exception:
        logger.exception("stream failed in request %s", request_id)
        yield last_frame("error", error_body(GatewayError("internal error"), request_id))
        return
    done: DoneEvent = {
        "generated_text": so_far.text,
        "model": served_model(req.model.name),
        "usage": usage_of(req, so_far.text, so_far.usage),
        "finish_reason": so_far.finish,
        "upstream": served_by(upstream),
    }
    yield last_frame("done", done)


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

    Served as a hot route (web/dispatch.py): ``respond`` returns the response, or raises
    GatewayError for the route to render (ClientDisconnect when the client left).
    """

    def __init__(self, operation_id: str = "chat") -> None:
        self.operation = chat_operation(operation_id)
        self.plans: Plans[ChatPlan] = Plans()

    async def respond(self, scope: Scope, receive: Receive) -> Response:
        return await chat(scope, receive, self.plans)


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


class LastHit(Struct):
    """The last cache hit a plan answered: the in-process cache's entry, its upstream and the
    reply's bytes. While that entry is the one cached, a hit is answered with the same bytes,
    not rendered again; a hit of another entry is rendered and kept instead."""

    entry: CachedGeneration | None = None
    upstream: str = ""
    body: bytes = b""


# Hits with longer replies are rendered each time: the plans stay small.
MAX_KEPT_REPLY_BYTES = 8192


class ChatPlan(Struct, frozen=True):
    """What a body came to: the normalised request, whether it is streamed, its cache key
    (and the last hit it answered)."""

    req: GenerationRequest
    stream: bool
    key: str | None
    last: LastHit = field(default_factory=LastHit)


def plan_chat(body: bytes, accept: str, cache_scope: str, ctx: AppContext) -> ChatPlan:
    settings = ctx.settings
    parsed = parse_chat_request(body, max_new_tokens_limit=settings.max_new_tokens_limit)
    stream = parsed.stream if parsed.stream is not None else prefers_events(accept)
    req = generation_request(parsed, ctx, stream=stream, cache_scope=cache_scope)
    return ChatPlan(req, stream, ctx.gateway.key_of(req))


async def chat(scope: Scope, receive: Receive, plans: Plans[ChatPlan]) -> Response:
    ctx: AppContext = scope["state"]["ctx"]
    headers = wanted_headers(scope)
    body = await read_json_body(headers, receive, ctx.settings.max_body_bytes)
    cache_scope, show_cache = cache_view(scope, ctx)
    memo = (body, headers.get(b"accept", ""), cache_scope)
    plan = plans.get(memo)
    if plan is None:
        plan = plan_chat(body, memo[1], cache_scope, ctx)
        plans.keep(memo, plan)
    req = plan.req
    policy = parse_cache_control(headers.get(b"cache-control", ""))
    last = plan.last
    if last.entry is not None:
        age = ctx.gateway.kept_hit(plan.key, policy, last.entry)
        if age is not None:
            kept = cache_headers_of(last.upstream, "HIT", age, show=show_cache)
            return JSONResponse.of(last.body, kept)
    if plan.stream:
        served_stream = await ctx.gateway.stream(req, policy, key=plan.key)
        cache_headers = cache_headers_of(
            served_stream.upstream, served_stream.cache, served_stream.age, show=show_cache
        )
        events = _events(served_stream.chunks, req, request_id_of(scope), served_stream.upstream)
        return event_stream(events, cache_headers)
    served = await ctx.gateway.generate(req, policy, key=plan.key)
    generation = served.generation
    answer = cache_headers_of(generation.upstream, served.cache, served.age, show=show_cache)
    reply: ChatReply = {
        "generated_text": generation.text,
        "model": generation.model,
        "usage": usage_of(req, generation.text, generation.usage),
    }
    body = orjson.dumps(reply)
    if served.entry is not None and len(body) <= MAX_KEPT_REPLY_BYTES:
        last.entry, last.upstream, last.body = served.entry, generation.upstream, body
    return JSONResponse.of(body, answer)
