"""The generation routes served before Starlette's own layers, each in one frame.

A ``POST`` to a hot path goes straight to its ``HotRoute``, which does in one frame what the
app's layers do around every other route: observing (``Observer``: id, record, metrics, the
access line), the CORS answer for a request with an ``Origin`` (``OriginHeaders``, decided as
Starlette's middleware decides it), the guard, the endpoint, and the last line of error
handling (every error rendered as our JSON error, a crash logged and answered with a bare
500). A sized answer is sent with its headers added to the response itself: no layer wraps
``send``. Every other request, a wrong method on a hot path included (a 405), is Starlette's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from proxy.access.guard import Guard
from proxy.context import AppContext
from proxy.observe.record import RequestRecord
from proxy.web.cors import OriginHeaders
from proxy.web.event_stream import EventStream
from proxy.web.instrument import Observer, request_id_of
from proxy.web.last_error import failure_response
from proxy.web.operations import Operation

Respond = Callable[[Scope, Receive], Awaitable[Response]]


class HotRoute:
    """One generation route's whole path: observed, CORS, guarded, answered, errors rendered.

    ``respond`` reads the request and returns its response, or raises GatewayError (or
    ClientDisconnect when the client left before its body came).
    """

    def __init__(
        self,
        respond: Respond,
        operation: Operation,
        *,
        observer: Observer,
        cors: OriginHeaders,
    ) -> None:
        self.respond = respond
        self.operation = operation  # what the route documents (routes/openapi.py)
        self.observer = observer
        self.cors = cors

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        observer = self.observer
        record = observer.begin(scope)
        status = 499  # the client left before an answer
        finished = False  # the whole body was sent
        cache = upstream = b"-"
        origin = None
        for key, value in scope["headers"]:
            if key == b"origin":
                origin = value
                break
        try:
            response = await self._response(scope, receive, record)
            if response is None:
                return
            status = response.status_code
            cache, upstream = self._head(response, origin, record)
            started = True  # a sized answer: its start and body go out in one call
            tracked = send
            # An event stream says itself how far it got; another stream's sends are watched.
            events = response if isinstance(response, EventStream) else None
            if events is None and isinstance(response, StreamingResponse):
                started = False

                async def tracking_send(message: Message) -> None:
                    nonlocal started, finished
                    if message["type"] == "http.response.body":
                        finished = not message.get("more_body", False)
                    else:
                        started = True
                    await send(message)

                tracked = tracking_send
            try:
                await response(scope, receive, tracked)
                finished = events.ended if events is not None else finished or tracked is send
                return
            except Exception as exc:
                if events is not None:
                    started, finished = events.started, events.ended
                # Rendered here, sent after the block (see last_error.py).
                response = failure_response(exc, scope, request_id_of(scope))
                if started:
                    return  # too late for a status; the connection simply ends
            status = response.status_code
            cache, upstream = self._head(response, origin, record)
            await response(scope, receive, send)
            finished = True
        finally:
            observer.end(scope, record, status, finished, cache, upstream)

    async def _response(
        self, scope: Scope, receive: Receive, record: RequestRecord
    ) -> Response | None:
        """The response to send: the endpoint's, or an error rendered; None when the client
        left before its request was whole."""
        ctx: AppContext = scope["state"]["ctx"]
        guard: Guard = ctx.guard
        try:
            await guard.enter(scope, record, ctx.tracing)
            return await self.respond(scope, receive)
        except ClientDisconnect:
            return None  # nobody is left to answer
        except Exception as exc:
            response = failure_response(exc, scope, request_id_of(scope))
        return response

    def _head(
        self, response: Response, origin: bytes | None, record: RequestRecord
    ) -> tuple[bytes, bytes]:
        headers = response.raw_headers
        if origin is not None:
            headers += self.cors.of(origin)
        return self.observer.head(headers, record)


class GatewayApp(Starlette):
    """Starlette, with a few ``POST`` routes dispatched by path before its middleware stack."""

    hot: Mapping[str, HotRoute] = {}

    def serve_hot(self, routes: Mapping[str, HotRoute]) -> None:
        """Serve a ``POST`` to each path of ``routes`` with its route."""
        self.hot = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            app = self.hot.get(scope["path"])
            if app is not None:
                scope["app"] = self
                await app(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
