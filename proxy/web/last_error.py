"""The last line of error handling: every error a request raises is answered as our JSON error.

``LastErrorMiddleware`` catches what escaped the routes, inside the CORS layer; the two
exception handlers render what Starlette's router raises (an unknown path, a wrong method) and
a ``GatewayError`` raised in a handler.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.errors import GatewayError, MethodNotAllowed, NotFound
from proxy.observe.record import current_record
from proxy.web.instrument import request_id_of
from proxy.web.responses import render_error

logger = logging.getLogger("proxy.app")


async def gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return render_error(exc, request.scope, request_id_of(request.scope))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    where = f"{request.method} {request.url.path[:100]}"
    error: GatewayError
    if exc.status_code == 404:
        error = NotFound(f"no route {where}; see the README for the API")
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = MethodNotAllowed(
            f"{where} is not allowed; use {allowed or 'another method'}",
            headers={"Allow": allowed} if allowed else None,
        )
    else:
        error = GatewayError(str(exc.detail), code=f"http_{exc.status_code}")
        error.status = exc.status_code
    return render_error(error, request.scope, request_id_of(request.scope))


EXCEPTION_HANDLERS = {GatewayError: gateway_error, HTTPException: http_error}


def failure_response(exc: Exception, scope: Scope, request_id: str | None) -> Response:
    """What a request that raised ``exc`` is answered with: a GatewayError rendered as it is;
    anything else logged with the request id and answered with a generic 500 that reveals
    nothing. The response keeps no reference to ``exc`` (whose traceback holds the frames of
    the failed call)."""
    if not isinstance(exc, GatewayError):
        logger.exception("unhandled error in request %s", request_id)
        exc = GatewayError("internal error; the request id is in the logs")
    return render_error(exc, scope, request_id)


class LastErrorMiddleware:
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
        record = current_record()  # the observing layer's, which notes the response's start
        started = False
        tracked = send
        if record is None:  # no observing layer: note the start here

            async def tracking_send(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                await send(message)

            tracked = tracking_send
        try:
            await self.app(scope, receive, tracked)
            return
        except Exception as exc:
            if record is not None:
                started = record.responded
            # Rendered here, sent after the block: no local of this frame, which is in the
            # exception's traceback, may keep the exception (a cycle that would hold every
            # frame of the failed call, and what they read, until the collector runs).
            response = failure_response(exc, scope, request_id_of(scope))
            if started:
                return  # too late for a status; the connection simply ends
        await response(scope, receive, send)
