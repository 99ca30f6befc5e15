"""The OpenAI-compatible front: ``POST /v1/chat/completions`` and ``GET /v1/models``.

Mapped onto the same gateway core as the seed's routes, so the official ``openai`` client and
OpenAI-style chat UIs work unchanged. Errors use OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, Literal

import msgspec
import orjson
from msgspec import Meta, Struct
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope

from proxy.context import AppContext, context_of
from proxy.core.cache import parse_cache_control
from proxy.core.catalog import ModelSpec
from proxy.core.generation import Chunk, GenerationRequest
from proxy.errors import GatewayError, InvalidRequest, NotFound, echo
from proxy.observe.record import served_model
from proxy.routes.bodies import ChatMessage, ChatRequest, Parameters
from proxy.routes.body_errors import rejected_body
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
from proxy.routes.replies import ChatCompletion, OpenAIModel, OpenAIModelList
from proxy.web.instrument import request_id_of
from proxy.web.operations import GENERATION_ERRORS, Operation, Reply, documented
from proxy.web.responses import JSONResponse, openai_error_body
from proxy.web.sse import LastFrame

logger = logging.getLogger("proxy.app")

# Llama 2's release, as the models' "created" time.
LLAMA2_RELEASED = 1689638400


class ContentPart(Struct):
    """One part of a message's content: text is read; images and audio are refused."""

    type: str
    text: str | None = None


class OpenAIMessage(Struct):
    # "developer" is what newer clients send instead of "system"; it is one.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]

    @property
    def chat_role(self) -> Literal["system", "user", "assistant"]:
        return "system" if self.role == "developer" else self.role

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)


class StreamOptions(Struct):
    include_usage: bool = False


class CompletionRequest(Struct):
    """The fields of OpenAI's chat completion request that the gateway honours; other fields
    are accepted and ignored, as OpenAI-compatible servers commonly do."""

    model: str
    messages: Annotated[list[OpenAIMessage], Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    # Not OpenAI's, but vLLM's and TGI's: the official client sends them in extra_body.
    top_k: Annotated[int, Meta(ge=1, le=1000)] | None = None
    repetition_penalty: Annotated[float, Meta(gt=0, le=10)] | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    seed: int | None = None


_COMPLETION = msgspec.json.Decoder(CompletionRequest)


# Fields whose silent omission would change what the client gets back: refused with a 400
# that says so, rather than ignored (README: "OpenAI fields").
def _refuse_what_cannot_be_honoured(body: CompletionRequest) -> None:
    if body.n != 1:
        raise InvalidRequest(
            "n must be 1: the gateway returns one choice", code="unsupported_n", param="n"
        )
    if body.tools or body.functions:
        raise InvalidRequest(
            "tools and functions are not supported", code="unsupported_tools", param="tools"
        )
    kind = (body.response_format or {}).get("type", "text")
    if kind != "text":
        raise InvalidRequest(
            f"response_format {echo(kind)} is not supported: Llama 2 here cannot guarantee "
            "JSON output; ask for JSON in the prompt and validate it, or send "
            '{"type": "text"}',
            code="unsupported_response_format",
            param="response_format",
        )
    if body.logprobs or body.top_logprobs:
        raise InvalidRequest(
            "logprobs are not supported: the upstreams behind the gateway do not return them",
            code="unsupported_logprobs",
            param="logprobs",
        )
    if body.seed is not None:
        raise InvalidRequest(
            "seed is not supported: replies cannot be reproduced by seed; use temperature 0 "
            "for deterministic replies",
            code="unsupported_seed",
            param="seed",
        )
    for index, message in enumerate(body.messages):
        if isinstance(message.content, list):
            for part in message.content:
                if part.type != "text":
                    raise InvalidRequest(
                        f"{echo(part.type)} content is not supported: the model reads text only",
                        code="unsupported_content",
                        param=f"messages.{index}.content",
                    )


def _to_generation_request(
    body: CompletionRequest, ctx: AppContext, cache_scope: str
) -> GenerationRequest:
    settings = ctx.settings
    _refuse_what_cannot_be_honoured(body)
    max_new = body.max_completion_tokens or body.max_tokens
    if max_new is not None and max_new > settings.max_new_tokens_limit:
        raise InvalidRequest(
            f"max_tokens must be at most {settings.max_new_tokens_limit}; got {echo(max_new)}",
            code="invalid_parameter",
        )
    chat = ChatRequest(
        messages=[ChatMessage(role=m.chat_role, content=m.text()) for m in body.messages],
        model=body.model,
        parameters=Parameters(
            max_new_tokens=max_new,
            temperature=body.temperature,
            top_p=body.top_p,
            top_k=body.top_k,
            repetition_penalty=body.repetition_penalty,
        ),
    )
    req = generation_request(chat, ctx, stream=body.stream, cache_scope=cache_scope)
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    return msgspec.structs.replace(req, stop=tuple(s for s in stop if s), rewritable=False)


class CompletionPlan(Struct, frozen=True):
    """What a body came to: the parsed body, the normalised request and its cache key."""

    body: CompletionRequest
    req: GenerationRequest
    key: str | None


def plan_completion(raw: bytes, cache_scope: str, ctx: AppContext) -> CompletionPlan:
    try:
        body = _COMPLETION.decode(raw)
    except msgspec.MsgspecError as exc:
        limit = ctx.settings.max_new_tokens_limit
        raise rejected_body(exc, raw, root=CompletionRequest, max_new_tokens_limit=limit) from None
    req = _to_generation_request(body, ctx, cache_scope)
    return CompletionPlan(body, req, ctx.gateway.key_of(req))


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

    def __init__(self) -> None:
        self.plans: Plans[CompletionPlan] = Plans()

    async def respond(self, scope: Scope, receive: Receive) -> Response:
        """The response (a hot route's, web/dispatch.py), or GatewayError raised."""
        ctx: AppContext = scope["state"]["ctx"]
        headers = wanted_headers(scope)
        raw = await read_json_body(headers, receive, ctx.settings.max_body_bytes)
        cache_scope, show_cache = cache_view(scope, ctx)
        memo = (raw, "", cache_scope)
        plan = self.plans.get(memo)
        if plan is None:
            plan = plan_completion(raw, cache_scope, ctx)
            self.plans.keep(memo, plan)
        body, req = plan.body, plan.req
        policy = parse_cache_control(headers.get(b"cache-control", ""))
        completion_id = f"chatcmpl-{request_id_of(scope)}"
        created = int(time.time())
        if body.stream:
            served_stream = await ctx.gateway.stream(req, policy, key=plan.key)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            frames = _stream_frames(
                served_stream.chunks, req, completion_id, created, include_usage
            )
            cache = cache_headers_of(
                served_stream.upstream, served_stream.cache, served_stream.age, show=show_cache
            )
            return event_stream(frames, cache)
        served = await ctx.gateway.generate(req, policy, key=plan.key)
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
        return JSONResponse.of(
            orjson.dumps(completion),
            cache_headers_of(generation.upstream, served.cache, served.age, show=show_cache),
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
        "model": served_model(req.model.name),
    }

    def chunk_frame(delta: dict[str, str], finish: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return _data({**head, "choices": [choice]})

    so_far = StreamSoFar()
    yield chunk_frame({"role": "assistant", "content": ""}, None)
    try:
        async with aclosing(chunks):
            async for chunk in chunks:
                before = so_far.text
                so_far.add(chunk)
                if chunk.replace:  # only what extends the text already sent can be a delta
                    delta = chunk.text[len(before) :] if chunk.text.startswith(before) else ""
                else:
                    delta = chunk.text
                if delta:
                    yield chunk_frame({"content": delta}, None)
    except GatewayError as exc:
        yield LastFrame(_data(openai_error_body(exc)))
        return
    except Exception:
        logger.exception("stream failed in completion %s", completion_id)
        yield LastFrame(_data(openai_error_body(GatewayError("internal error"))))
        return
    # The finish chunk, the usage and [DONE] are ready together: one write.
    end = chunk_frame({}, so_far.finish)
    if include_usage:
        end += _data({**head, "choices": [], "usage": usage_of(req, so_far.text, so_far.usage)})
    yield LastFrame(end + b"data: [DONE]\n\n")


@documented(
    Operation(
        "openaiModel",
        "One model in OpenAI's shape (404 in OpenAI's error shape for an unknown id)",
        replies={200: Reply("the model", OpenAIModel)},
        errors={404: "no model of that id"},
    )
)
async def model(request: Request) -> Response:
    """``GET /v1/models/{id}``: one model, by its public name or Hub id."""
    name = request.path_params["model_id"]
    try:
        spec = context_of(request).catalog.resolve(name)
    except GatewayError:
        raise NotFound(
            f"the model {echo(name)} does not exist; GET /v1/models lists the models",
            code="model_not_found",
            param="model",
        ) from None
    return JSONResponse(_openai_model(spec))


def _openai_model(spec: ModelSpec) -> OpenAIModel:
    return {
        "id": spec.name,
        "object": "model",
        "created": LLAMA2_RELEASED,
        "owned_by": "meta-llama",
    }


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
        "data": [_openai_model(spec) for spec in catalog.models],
    }
    return JSONResponse(listed)
