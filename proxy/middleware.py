"""Plain ASGI middleware: request ids on every response, and the last line of error handling.

Both are pure ASGI (no BaseHTTPMiddleware) so that streamed responses pass through untouched.
"""

from __future__ import annotations

import itertools
import logging
import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.errors import GatewayError
from proxy.responses import error_response

logger = logging.getLogger("proxy.app")

_VALID_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state")
    return state.get("request_id") if isinstance(state, dict) else None


class RequestIdMiddleware:
    """Gives every request an id (a valid incoming ``X-Request-ID`` is kept) and puts it on the
    response; also adds ``Vary: Origin`` so shared caches never mix CORS answers."""

    def __init__(self, app: ASGIApp, *, vary_origin: bool) -> None:
        self.app = app
        self.vary_origin = vary_origin
        # A random per-process prefix and a counter: unique across instances, and far
        # cheaper per request than uuid4.
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if _VALID_REQUEST_ID.match(value):
                    request_id = value
                break
        if request_id is None:
            request_id = f"{self._prefix}{next(self._counter):08x}".encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode()
        vary_origin = self.vary_origin

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id))
                if vary_origin:
                    _add_vary_origin(headers)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


def _add_vary_origin(headers: list[tuple[bytes, bytes]]) -> None:
    for index, (key, value) in enumerate(headers):
        if key.lower() == b"vary":
            if b"origin" not in value.lower():
                headers[index] = (key, value + b", Origin")
            return
    headers.append((b"vary", b"Origin"))


class ErrorGuardMiddleware:
    """Renders any error that escaped the routes as our JSON error, inside the CORS layer.

    Starlette sends handlers for ``Exception`` to its outermost layer, outside CORS, so a browser
    would see a CORS failure instead of the message (starlette #1116, #1175). Unexpected errors
    are logged with the request id and answered with a generic 500 that reveals nothing.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            request_id = request_id_of(scope)
            if isinstance(exc, GatewayError):
                error = exc
            else:
                logger.exception("unhandled error in request %s", request_id)
                error = GatewayError("internal error; the request id is in the logs")
            if started:
                return  # too late for a status; the connection simply ends
            await error_response(error, request_id)(scope, receive, send)
