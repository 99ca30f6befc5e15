"""What both fronts (the seed routes and the OpenAI-compatible ones) share: reading the
request, normalising it under the settings, the cache's view and headers, and folding a
stream into its text and usage."""

from __future__ import annotations

from collections.abc import AsyncIterator

from msgspec import Struct
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope

from proxy.access.guard import Caller
from proxy.context import AppContext
from proxy.core.generation import Chunk, FinishReason, GenerationRequest, Usage, estimate_tokens
from proxy.errors import PayloadTooLarge, UnsupportedMediaType
from proxy.observe.record import current_record
from proxy.routes.bodies import ChatRequest, to_generation_request
from proxy.routes.replies import CompletionUsage
from proxy.web.event_stream import EventStream

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event_stream(
    frames: AsyncIterator[bytes], cache_headers: list[tuple[bytes, bytes]]
) -> EventStream:
    """A stream of Server-Sent Events, unbuffered and uncached on the way, with the cache's
    headers (``cache_headers_of``)."""
    response = EventStream(frames, media_type="text/event-stream", headers=_SSE_HEADERS)
    response.raw_headers += cache_headers
    return response


# The request headers the generation routes read, found in one pass over the raw list: Starlette's
# Headers.get scans and decodes every header per lookup, and a missing one raises inside.
_WANTED = (b"content-type", b"content-length", b"accept", b"cache-control")


def wanted_headers(scope: Scope) -> dict[bytes, str]:
    return {k: v.decode("latin-1") for k, v in scope["headers"] if k in _WANTED}


async def read_json_body(headers: dict[bytes, str], receive: Receive, limit: int) -> bytes:
    """The raw body of a JSON request, refusing other media types and bodies over ``limit``.

    Raises ClientDisconnect when the client leaves before the body arrived.
    """
    media_type = headers.get(b"content-type", "")
    if media_type != "application/json":  # else parsed: parameters, case, +json types
        media_type = media_type.split(";")[0].strip().lower()
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
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over the {limit}-byte limit")
        if not message.get("more_body", False):
            if not chunks:
                return chunk  # the usual body: whole in one message
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


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


def cache_headers_of(
    upstream: str, cache: str, age: int | None, *, show: bool = True
) -> list[tuple[bytes, bytes]]:
    """X-Upstream (and X-Upstream-Ignored when the upstream could not take some of the
    request's fields), and when ``show``, X-Cache and Age, as a response's raw headers."""
    headers = [(b"x-upstream", upstream.encode("latin-1"))]
    record = current_record()
    if record is not None and record.ignored:
        headers.append((b"x-upstream-ignored", ", ".join(record.ignored).encode("latin-1")))
    if not show:
        return headers
    headers.append((b"x-cache", cache.encode("latin-1")))
    if age is not None:
        headers.append((b"age", b"%d" % age))
    return headers


class StreamSoFar(Struct):
    """A stream's text, finish reason and usage so far, folded in chunk by chunk."""

    text: str = ""
    finish: FinishReason = "stop"
    usage: Usage | None = None

    def add(self, chunk: Chunk) -> None:
        self.finish = chunk.finish_reason or self.finish
        self.usage = chunk.usage or self.usage
        self.text = chunk.text if chunk.replace else self.text + chunk.text


def usage_of(req: GenerationRequest, text: str, usage: Usage | None) -> CompletionUsage:
    """The usage to report for ``text``: the upstream's counts, or an estimate that says so."""
    usage = usage or Usage(estimate_tokens(req.prompt), estimate_tokens(text), estimated=True)
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "estimated": usage.estimated,
    }
