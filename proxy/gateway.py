"""The gateway core: turns a GenerationRequest into a Generation or a stream of text deltas.

It knows nothing of HTTP; routes call it with validated values and render what it returns.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from proxy.catalog import Catalog
from proxy.generation import Generation, GenerationRequest
from proxy.upstreams.base import Readiness, Upstream


class Gateway:
    """One upstream and the catalogue of models it serves."""

    def __init__(self, upstream: Upstream, catalog: Catalog) -> None:
        self.upstream = upstream
        self.catalog = catalog

    @property
    def upstream_name(self) -> str:
        return self.upstream.name

    async def generate(self, req: GenerationRequest) -> Generation:
        """The complete reply; raises GatewayError subclasses on upstream trouble."""
        return await self.upstream.generate(req)

    def stream(self, req: GenerationRequest) -> AsyncGenerator[str, None]:
        """Text deltas as the upstream produces them; close it to cancel the upstream call."""
        return self.upstream.stream(req)

    async def ready(self) -> Readiness:
        return await self.upstream.ready()

    async def start(self) -> None:
        await self.upstream.start()

    async def aclose(self) -> None:
        await self.upstream.aclose()
