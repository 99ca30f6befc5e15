"""A stream in flight shared across instances: its leader publishes, the others follow.

The instance whose single-flight lock won generates and publishes every chunk, then the end
(done, or the error every follower raises too). Another instance follows from the first
entry, so a late follower gets everything sent so far. A follower never hangs on a leader or
a Redis that is gone: when the lock is released without an end (a JSON leader; its entry is
then in the cache) or Redis fails, it serves the rest itself, from the cache entry or its own
generation, without what its clients already have.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import orjson

from proxy import errors
from proxy.core.cache import CacheUnavailable, SharedCache
from proxy.core.continuation import without_tail
from proxy.core.generation import Chunk, FinishReason, Usage
from proxy.core.stream_flights import StreamFlights
from proxy.errors import GatewayError
from proxy.observe.record import current_record

logger = logging.getLogger("proxy.gateway")

CHUNK, DONE, FAILED = b"c", b"d", b"x"
# One read waits this long for an entry; between reads the follower checks the leader.
READ_BLOCK = 0.5
# How often a follower renews its presence, and a leader its lock.
RENEW_EVERY = 1.0


def _chunk_fields(chunk: Chunk) -> dict[bytes, bytes]:
    usage = chunk.usage
    counts = [usage.prompt_tokens, usage.completion_tokens, usage.estimated] if usage else None
    fields = {CHUNK: orjson.dumps([chunk.text, chunk.replace, chunk.finish_reason, counts])}
    record = current_record()
    if record is not None and record.upstreams:
        fields[b"u"] = orjson.dumps(record.upstreams)
    if record is not None and record.model:
        fields[b"m"] = record.model.encode()
    return fields


def _chunk_of(raw: bytes) -> Chunk:
    text, replace, finish, counts = orjson.loads(raw)
    usage = Usage(int(counts[0]), int(counts[1]), bool(counts[2])) if counts else None
    return Chunk(str(text), bool(replace), finish, usage)


def _error_fields(exc: BaseException) -> dict[bytes, bytes]:
    error = exc if isinstance(exc, GatewayError) else GatewayError("internal error")
    data = {
        "type": type(error).__name__,
        "message": error.message,
        "code": error.code,
        "status": error.status,
        "retry_after": error.retry_after,
    }
    return {FAILED: orjson.dumps(data)}


def _error_of(raw: bytes) -> GatewayError:
    """The leader's error as this instance raises it: same class, status, code and message."""
    data: dict[str, Any] = orjson.loads(raw)
    cls = getattr(errors, str(data.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, GatewayError)):
        cls = GatewayError
    error = cls(str(data["message"]), code=str(data["code"]), retry_after=data.get("retry_after"))
    error.status = int(data["status"])
    return error


async def shared_source(
    cache: SharedCache,
    key: str,
    flights: StreamFlights,
    *,
    generate: Callable[[], AsyncGenerator[Chunk, None]],
    timeout: float,
    on_failure: Callable[[CacheUnavailable], None],
) -> AsyncGenerator[Chunk, None]:
    """What the flight of ``key`` runs with a shared cache: ``generate()`` published to the
    other instances when this one wins the lock on ``key``; the winner's stream followed
    when another one holds it; ``generate()`` alone when Redis cannot say."""
    flight = flights.get(key)  # running now: the flight is registered
    try:
        token = await cache.lock(key)
    except CacheUnavailable as exc:
        on_failure(exc)
        token = ""  # generate here, without telling anyone
    if token is None:
        if flight is not None:
            flight.remote = True
        chunks = followed(cache, key, resume=generate, timeout=timeout, on_failure=on_failure)
    elif not token:
        chunks = generate()
    else:
        if flight is not None:
            flight.followed_elsewhere = lambda: cache.followed(key)
        chunks = published(generate(), cache, key, token, on_failure=on_failure)
    try:
        async with aclosing(chunks):
            async for chunk in chunks:
                yield chunk
    finally:
        if token:
            await cache.unlock(key, token)


async def published(
    chunks: AsyncGenerator[Chunk, None],
    cache: SharedCache,
    key: str,
    token: str,
    *,
    on_failure: Callable[[CacheUnavailable], None],
) -> AsyncGenerator[Chunk, None]:
    """``chunks`` as they come, each also published for the other instances (after it went to
    this instance's listeners), then the end; the lock on ``key`` renewed while it runs.
    After a Redis failure, nothing more is published: the followers serve themselves."""
    live = True
    renewed = time.monotonic()

    async def send(fields: dict[bytes, bytes]) -> None:
        nonlocal live, renewed
        if not live:
            return
        try:
            await cache.publish(key, fields)
            if time.monotonic() - renewed >= RENEW_EVERY:
                renewed = time.monotonic()
                await cache.refresh(key, token)
        except CacheUnavailable as exc:
            live = False
            on_failure(exc)

    try:
        async for chunk in chunks:
            yield chunk
            await send(_chunk_fields(chunk))
    except Exception as exc:  # not when stopped: a follower that comes then serves itself
        await send(_error_fields(exc))
        raise
    finally:
        await chunks.aclose()
    await send({DONE: b"1"})


async def followed(
    cache: SharedCache,
    key: str,
    *,
    resume: Callable[[], AsyncGenerator[Chunk, None]],
    timeout: float,
    on_failure: Callable[[CacheUnavailable], None],
) -> AsyncGenerator[Chunk, None]:
    """The chunks another instance generates for ``key``, from its first; when its lock is
    gone without an end, or Redis fails, or ``timeout`` passes, the rest from the cache entry
    or from ``resume()``, less what was already sent."""
    sent = ""
    after = b"0-0"
    deadline = time.monotonic() + timeout
    renewed = time.monotonic()
    joined = False
    record = current_record()
    try:
        await cache.follow(key, 1)
        joined = True
        while time.monotonic() < deadline:
            entries = await cache.read(key, after, READ_BLOCK)
            if time.monotonic() - renewed >= RENEW_EVERY:
                renewed = time.monotonic()
                await cache.follow(key, 0)
            if not entries:
                if await cache.locked(key):
                    continue  # the leader is still at it
                entry = await cache.get(key)
                if entry is None:
                    break  # it left without an answer: generate it here
                async for chunk in without_tail(_whole(entry.text, entry.finish_reason), "", sent):
                    yield chunk
                return
            for entry_id, fields in entries:
                after = entry_id
                if CHUNK in fields:
                    if b"u" in fields and record is not None:
                        record.upstreams = list(orjson.loads(fields[b"u"]))
                    if b"m" in fields and record is not None:
                        record.model = fields[b"m"].decode(errors="replace")
                    chunk = _chunk_of(fields[CHUNK])
                    sent = chunk.text if chunk.replace else sent + chunk.text
                    yield chunk
                elif DONE in fields:
                    return
                elif FAILED in fields:
                    raise _error_of(fields[FAILED])
        logger.warning("a followed stream went silent; generating it here")
    except CacheUnavailable as exc:
        on_failure(exc)
    finally:
        if joined:
            try:
                await cache.follow(key, -1)
            except CacheUnavailable:
                pass  # the presence expires by itself
    async for chunk in without_tail(resume(), "", sent):
        yield chunk


async def _whole(text: str, finish: FinishReason) -> AsyncGenerator[Chunk, None]:
    yield Chunk(text, finish_reason=finish)
