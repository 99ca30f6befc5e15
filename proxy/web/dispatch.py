"""The generation routes served before Starlette's own layers.

A request to a hot route (``POST`` to a path of ``hot``) goes straight into a chain of the
app's middleware built once at start-up around its endpoint: Starlette's outer error layer,
its exception layer and its router, which every request otherwise passes, are skipped. Every
other request, a wrong method on a hot path included (a 405), is Starlette's as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send


def chain(endpoint: ASGIApp, middleware: Sequence[Middleware]) -> ASGIApp:
    """``endpoint`` inside ``middleware``, the first one outermost, as Starlette stacks them."""
    app = endpoint
    for cls, args, kwargs in reversed(middleware):
        app = cls(app, *args, **kwargs)
    return app


class GatewayApp(Starlette):
    """Starlette, with a few ``POST`` routes dispatched by path before its middleware stack."""

    hot: dict[str, ASGIApp] = {}

    def serve_hot(self, endpoints: Mapping[str, ASGIApp], middleware: Sequence[Middleware]) -> None:
        """Serve a ``POST`` to each path of ``endpoints`` through ``middleware`` around it."""
        self.hot = {path: chain(endpoint, middleware) for path, endpoint in endpoints.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            app = self.hot.get(scope["path"])
            if app is not None:
                scope["app"] = self
                await app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
