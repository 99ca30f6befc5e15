"""A call-counting upstream for cache and single-flight tests: the mock's replies, with an
optional delay and scripted failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from proxy.core.generation import Chunk, Generation, GenerationRequest
from proxy.errors import GatewayError
from proxy.upstreams.mock import MockUpstream


class SpyUpstream(MockUpstream):
    name = "spy"
    identity = "spy"

    def __init__(self, *, delay: float = 0.0, failures: list[GatewayError] | None = None) -> None:
        super().__init__()
        self.calls = 0
        self.stream_calls = 0
        self.requests: list[GenerationRequest] = []  # every request it was asked, in order
        self.delay = delay
        self.failures = list(failures or [])

    async def generate(self, req: GenerationRequest) -> Generation:
        self.calls += 1
        self.requests.append(req)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.failures:
            raise self.failures.pop(0)
        return await super().generate(req)

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        self.stream_calls += 1
        self.requests.append(req)
        if self.failures:
            yield Chunk("partial ")
            raise self.failures.pop(0)
        async for chunk in super().stream(req):
            yield chunk
