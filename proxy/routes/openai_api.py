"""The OpenAI-compatible front: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Mapped onto the same gateway core as the seed's routes, so the official ``openai`` client and
OpenAI-style chat UIs work unchanged. Errors use OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.cache import parse_cache_control
from proxy.context import AppContext, context_of
from proxy.errors import GatewayError, InvalidRequest
from proxy.generation import Chunk, GenerationRequest, Usage, usage_of
from proxy.middleware import request_id_of
from proxy.operations import GENERATION_ERRORS, Operation, Reply, documented
from proxy.replies import ChatCompletion, OpenAIModelList
from proxy.responses import JSONResponse, openai_error_body, openai_error_response
from proxy.routes.chat import (
    SSE_HEADERS,
    _wanted_headers,
    cache_headers_of,
    cache_view,
    generation_request,
    read_json_body,
)
from proxy.schemas import (
    ChatMessage,
    ChatRequest,
    Parameters,
    echo,
    translate_validation_error,
)

logger = logging.getLogger("proxy.app")

# Llama 2's release, as the models' "created" time.
LLAMA2_RELEASED = 1689638400


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class CompletionRequest(BaseModel):
    """The fields of OpenAI's chat completion request that the gateway honours; other fields
    are accepted and ignored, as OpenAI-compatible servers commonly do."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    model: str
    messages: Annotated[list[OpenAIMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None


def _to_generation_request(
    body: CompletionRequest, ctx: AppContext, cache_scope: str
) -> GenerationRequest:
    settings = ctx.settings
    if body.n != 1:
        raise InvalidRequest("n must be 1: the gateway returns one choice", code="unsupported_n")
    if body.tools or body.functions:
        raise InvalidRequest("tools and functions are not supported", code="unsupported_tools")
    max_new = body.max_completion_tokens or body.max_tokens
    if max_new is not None and max_new > settings.max_new_tokens_limit:
        raise InvalidRequest(
            f"max_tokens must be at most {settings.max_new_tokens_limit}; got {echo(max_new)}",
            code="invalid_parameter",
        )
    chat = ChatRequest(
        messages=[ChatMessage(role=m.role, content=m.text()) for m in body.messages],
        model=body.model,
        parameters=Parameters(
            max_new_tokens=max_new, temperature=body.temperature, top_p=body.top_p
        ),
    )
    req = generation_request(chat, ctx, stream=body.stream, cache_scope=cache_scope)
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return dataclasses.replace(req, stop=tuple(s for s in stop if s))


class CompletionsEndpoint:
    """``POST /v1/chat/completions``, as JSON or as OpenAI's ``data:`` stream."""

    operation = Operation(
        "chatCompletions",
        "OpenAI-compatible chat completion, JSON or a data: stream",
        replies={
            200: Reply(
                "the completion, or with stream a data: stream ending in [DONE]",
                ChatCompletion,
                events=(),
            )
        },
        # OpenAI answers every invalid request with 400, so this route has no 422.
        errors={k: v for k, v in GENERATION_ERRORS.items() if k != 422},
        request=CompletionRequest,
        auth="apiKey",
    )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self.handle(scope, receive)
        except ClientDisconnect:
            return
        except GatewayError as exc:
            response = openai_error_response(exc)
        await response(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive) -> Response:
        ctx: AppContext = scope["state"]["ctx"]
        headers = _wanted_headers(scope)
        raw = await read_json_body(headers, receive, ctx.settings.max_body_bytes)
        try:
            body = CompletionRequest.model_validate_json(raw)
        except ValidationError as exc:
            raise translate_validation_error(
                exc, max_new_tokens_limit=ctx.settings.max_new_tokens_limit
            ) from None
        cache_scope, show_cache = cache_view(scope, ctx)
        req = _to_generation_request(body, ctx, cache_scope)
        policy = parse_cache_control(headers.get(b"cache-control", ""))
        completion_id = f"chatcmpl-{request_id_of(scope)}"
        created = int(time.time())
        if body.stream:
            served_stream = await ctx.gateway.stream(req, policy)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            frames = _stream_frames(
                served_stream.chunks, req, completion_id, created, include_usage
            )
            cache = cache_headers_of(
                served_stream.upstream, served_stream.cache, served_stream.age, show=show_cache
            )
            return StreamingResponse(
                frames, media_type="text/event-stream", headers={**SSE_HEADERS, **cache}
            )
        served = await ctx.gateway.generate(req, policy)
        generation = served.generation
        completion: ChatCompletion = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": generation.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": generation.text},
                    "finish_reason": generation.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": usage_of(req, generation.text, generation.usage),
        }
        return JSONResponse(
            completion,
            headers=cache_headers_of(
                generation.upstream, served.cache, served.age, show=show_cache
            ),
        )


def _data(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _stream_frames(
    chunks: AsyncGenerator[Chunk, None],
    req: GenerationRequest,
    completion_id: str,
    created: int,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """OpenAI's stream: a role chunk, content chunks, a finish chunk, usage if asked, [DONE].

    OpenAI's format cannot take back text, so a Space's rewrite of earlier text is sent only
    as far as it extends what was sent; the non-streamed answer is always exact.
    """
    head = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": req.model.name,
    }

    def chunk_frame(delta: dict[str, str], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return _data({**head, "choices": [choice]})

    text = ""
    finish = "stop"
    usage: Usage | None = None
    yield chunk_frame({"role": "assistant", "content": ""}, None)
    try:
        async with aclosing(chunks):
            async for chunk in chunks:
                finish = chunk.finish_reason or finish
                usage = chunk.usage or usage
                if chunk.replace:
                    delta = chunk.text[len(text) :] if chunk.text.startswith(text) else ""
                    text = chunk.text
                else:
                    delta = chunk.text
                    text += delta
                if delta:
                    yield chunk_frame({"content": delta}, None)
    except GatewayError as exc:
        yield _data(openai_error_body(exc))
        return
    except Exception:
        logger.exception("stream failed in completion %s", completion_id)
        yield _data(openai_error_body(GatewayError("internal error")))
        return
    yield chunk_frame({}, finish)
    if include_usage:
        yield _data({**head, "choices": [], "usage": usage_of(req, text, usage)})
    yield b"data: [DONE]\n\n"


@documented(
    Operation(
        "openaiModels",
        "The models in OpenAI's list shape",
        replies={200: Reply("the models", OpenAIModelList)},
    )
)
async def models(request: Request) -> Response:
    """``GET /v1/models``: the catalogue in OpenAI's list shape."""
    catalog = context_of(request).catalog
    listed: OpenAIModelList = {
        "object": "list",
        "data": [
            {
                "id": spec.name,
                "object": "model",
                "created": LLAMA2_RELEASED,
                "owned_by": "meta-llama",
            }
            for spec in catalog.models
        ],
    }
    return JSONResponse(listed)
