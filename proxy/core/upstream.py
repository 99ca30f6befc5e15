"""The protocol every upstream adapter implements; the gateway core is written against it."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Protocol

from msgspec import Struct

from proxy.core.generation import Chunk, Generation, GenerationRequest
from proxy.errors import GatewayError


class Readiness(Struct, frozen=True):
    """Whether the upstream can take requests now, and if not, the error explaining why."""

    ready: bool
    detail: str
    error: GatewayError | None = None
    # With several upstreams: each one's state (ready, cold, cooling, open), by name.
    upstreams: Mapping[str, str] | None = None


class Upstream(Protocol):
    """A model endpoint. Methods raise GatewayError subclasses, never library exceptions."""

    name: str
    identity: str
    """Names this upstream in cache keys: replies of different upstreams never mix."""

    async def start(self) -> None:
        """Open connections and discover the endpoint; failures are kept for ready()."""

    async def generate(self, req: GenerationRequest) -> Generation:
        """The complete generation for ``req``."""
        ...

    def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Chunks of ``req``'s reply as they are generated; closing the generator cancels the
        upstream call."""
        ...

    async def ready(self) -> Readiness:
        """Whether requests can be served now (cheap; does not run a generation)."""
        ...

    async def probe(self) -> Readiness:
        """Ask the upstream now, forgetting earlier failures (what wakes a sleeping Space)."""
        ...

    async def aclose(self) -> None:
        """Release connections; the upstream is unusable afterwards."""
