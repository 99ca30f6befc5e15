"""The gateway as a function (Vercel's Python runtime, AWS Lambda): the same app that the
Procfile serves, started by its first request, because a function platform may never send
the ASGI lifespan events that start it under uvicorn.

One instance serves many invocations while it is warm: the upstream session, the memory
cache and the rate limiter built by the first request serve every later one.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from proxy.serving import app_from_environment


class OnDemand:
    """An ASGI app whose lifespan runs on the first request, once, however many requests
    arrive together. If the platform does send lifespan events, they are used instead."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.starts = 0  # how many times the lifespan ran here (tests count it)
        self._state: dict[str, Any] | None = None
        self._lock = asyncio.Lock()
        self._stack = AsyncExitStack()

    async def _start(self) -> dict[str, Any]:
        async with self._lock:
            if self._state is None:
                self.starts += 1
                context = self.app.router.lifespan_context(self.app)
                state = await self._stack.enter_async_context(context)
                self._state = dict(state or {})
            return self._state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or "ctx" in scope.get("state", {}):
            await self.app(scope, receive, send)  # a server that runs the lifespan itself
            return
        state = self._state if self._state is not None else await self._start()
        scope["state"] = state.copy()  # per request, as uvicorn hands it out
        await self.app(scope, receive, send)

    async def aclose(self) -> None:
        """Run the lifespan's shutdown (a platform that freezes the instance never does)."""
        await self._stack.aclose()
        self._state = None


def function_app() -> OnDemand:
    """The app of a function instance, configured from its environment, as a worker's is."""
    return OnDemand(app_from_environment())


_HANDLER: Any = None


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """AWS Lambda's entry point (API Gateway HTTP and REST APIs, function URLs), through
    mangum. Built on the first invocation; later ones reuse the warm app."""
    global _HANDLER
    if _HANDLER is None:
        from mangum import Mangum

        # lifespan off: mangum would run startup and shutdown around every invocation.
        _HANDLER = Mangum(function_app(), lifespan="off")
    return _HANDLER(event, context)  # type: ignore[no-any-return]
