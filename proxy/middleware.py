"""Plain ASGI middleware: request ids on every response, and the last line of error handling.

Both are pure ASGI (no BaseHTTPMiddleware) so that streamed responses pass through untouched.
"""

from __future__ import annotations

import logging
import re
import uuid

from starlette.datastructures import MutableHeaders
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

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        if incoming is not None and _VALID_REQUEST_ID.match(incoming):
            request_id = incoming.decode()
        else:
            request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                if self.vary_origin:
                    vary = headers.get("vary", "")
                    if "origin" not in vary.lower():
                        headers["Vary"] = f"{vary}, Origin" if vary else "Origin"
            await send(message)

        await self.app(scope, receive, send_with_id)


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
