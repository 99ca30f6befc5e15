"""Reads of an upstream body bounded by one timer per deadline (``body_reads.py``), against a
tiny real server that sends its chunks when the test says so."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web

from proxy.upstreams.body_reads import BodyReader, ReadExpired


@asynccontextmanager
async def chunked_body() -> AsyncIterator[tuple[BodyReader, asyncio.Queue[bytes]]]:
    """A reader of a response whose chunks are what the test puts on the queue (b"" ends
    it); released when the block ends."""
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        while chunk := await chunks.get():
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                reader = BodyReader(resp)
                try:
                    yield reader, chunks
                finally:
                    reader.release()
    finally:
        chunks.put_nowait(b"")
        await runner.cleanup()


async def test_a_read_that_waits_past_its_deadline_fails() -> None:
    loop = asyncio.get_running_loop()
    async with chunked_body() as (reader, _):
        started = loop.time()
        with pytest.raises(ReadExpired):
            await asyncio.wait_for(reader.read(started + 0.2), 3)
        assert 0.15 < loop.time() - started < 2


async def test_chunks_before_the_deadline_are_read_and_the_end_is_empty() -> None:
    loop = asyncio.get_running_loop()
    async with chunked_body() as (reader, chunks):
        deadline = loop.time() + 5
        got = []
        for part in (b"one", b"two", b"three"):
            chunks.put_nowait(part)
            got.append(await reader.read(deadline))
        chunks.put_nowait(b"")
        while chunk := await reader.read(deadline):
            got.append(chunk)
        assert b"".join(got) == b"onetwothree"


async def test_a_deadline_that_passes_between_reads_fails_only_a_read_that_must_wait() -> None:
    loop = asyncio.get_running_loop()
    async with chunked_body() as (reader, chunks):
        deadline = loop.time() + 0.2
        chunks.put_nowait(b"first")
        assert await reader.read(deadline) == b"first"
        chunks.put_nowait(b"arrived in time")
        await asyncio.sleep(0.4)  # the deadline passes while nobody reads
        assert await reader.read(deadline) == b"arrived in time"
        with pytest.raises(ReadExpired):
            await asyncio.wait_for(reader.read(deadline), 2)


async def test_a_later_deadline_replaces_the_first_tokens() -> None:
    """Until output the first token's deadline bounds a read; after, the call's: the first one
    passing must not fail the call."""
    loop = asyncio.get_running_loop()
    async with chunked_body() as (reader, chunks):
        first_token = loop.time() + 0.2
        chunks.put_nowait(b"token")
        assert await reader.read(first_token) == b"token"
        call = loop.time() + 5
        later = asyncio.create_task(reader.read(call))
        await asyncio.sleep(0.4)  # past the first token's deadline
        chunks.put_nowait(b"more")
        assert await asyncio.wait_for(later, 2) == b"more"


async def test_release_cancels_the_timer() -> None:
    """A released body is not kept alive by its timer until a distant deadline."""
    loop = asyncio.get_running_loop()
    async with chunked_body() as (reader, chunks):
        chunks.put_nowait(b"data")
        read = asyncio.create_task(reader.read(loop.time() + 300))
        assert await read == b"data"
        chunks.put_nowait(b"more")
        assert await reader.read(loop.time() + 300) in (b"more", b"")
        reader.release()
        gc.collect()
        timers = [r for r in gc.get_referrers(reader) if getattr(r, "__self__", None) is reader]
        assert not timers
