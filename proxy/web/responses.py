"""Response helpers: fast JSON, and the one place errors are rendered.

Each front has its renderer: everything under ``/v1/`` (the OpenAI-compatible front: its
routes, the guard in front of them, the router's own 404 and 405, crashes) answers in
OpenAI's error shape, so OpenAI clients show the message; every other path answers in the
gateway's own shape, which the seed's front ends read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NotRequired, TypedDict

import orjson
from starlette.responses import JSONResponse as _JSONResponse
from starlette.types import Message, Scope, Send

from proxy.errors import GatewayError


class ErrorReply(TypedDict):
    """Every error of the gateway's own routes: what is wrong and how to fix it."""

    error: str
    code: str
    request_id: NotRequired[str]


class OpenAIErrorDetail(TypedDict):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIErrorReply(TypedDict):
    """Every error under ``/v1/``, in OpenAI's shape."""

    error: OpenAIErrorDetail


class JSONResponse(_JSONResponse):
    """JSON with orjson: several times faster than the standard library on our hot path;
    its headers as Starlette's would be (given ones first, lower-cased, then Content-Length
    and Content-Type unless given), in fewer steps."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        if self.media_type != "application/json" or not 200 <= self.status_code < 600:
            super().init_headers(headers)
            return
        if self.status_code in (204, 304):
            super().init_headers(headers)
            return
        raw = (
            [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            if headers
            else []
        )
        if not raw:
            raw = [(b"content-length", b"%d" % len(self.body)), _JSON_TYPE]
        else:
            names = {name for name, _ in raw}
            if b"content-length" not in names:
                raw.append((b"content-length", b"%d" % len(self.body)))
            if b"content-type" not in names:
                raw.append(_JSON_TYPE)
        self.raw_headers = raw

    @classmethod
    def of(cls, body: bytes, headers: list[tuple[bytes, bytes]]) -> JSONResponse:
        """A 200 of JSON already rendered, with these raw headers: the response Starlette's
        constructor would make of them, without its steps."""
        response = cls.__new__(cls)
        response.status_code = 200
        response.background = None
        response.body = body
        headers.append((b"content-length", b"%d" % len(body)))
        headers.append(_JSON_TYPE)
        response.raw_headers = headers
        return response


_JSON_TYPE = (b"content-type", b"application/json")


def with_headers(send: Send, extra: list[tuple[bytes, bytes]]) -> Send:
    """``send``, with ``extra`` headers added to the response's start."""

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *extra]
        await send(message)

    return send_with_headers


def error_body(exc: GatewayError, request_id: str | None) -> ErrorReply:
    body: ErrorReply = {"error": exc.message, "code": exc.code}
    if request_id:
        body["request_id"] = request_id
    return body


def error_response(exc: GatewayError, request_id: str | None) -> JSONResponse:
    """``{"error", "code", "request_id"}`` with the error's status and headers."""
    return JSONResponse(error_body(exc, request_id), status_code=exc.status, headers=exc.headers)


OPENAI_PREFIX = "/v1/"
# OpenAI's error "type" for each status; anything else is an api_error.
_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error_body(exc: GatewayError) -> OpenAIErrorReply:
    """``{"error": {"message", "type", "param", "code"}}``, as OpenAI answers."""
    kind = _OPENAI_TYPES.get(exc.status, "api_error")
    return {"error": {"message": exc.message, "type": kind, "param": exc.param, "code": exc.code}}


def openai_error_response(exc: GatewayError) -> JSONResponse:
    # OpenAI answers every invalid request with 400; its clients expect no 422.
    status = 400 if exc.status == 422 else exc.status
    return JSONResponse(openai_error_body(exc), status_code=status, headers=exc.headers)


def render_error(exc: GatewayError, scope: Scope, request_id: str | None) -> JSONResponse:
    """``exc`` in the shape of the front that ``scope``'s path belongs to."""
    if scope.get("path", "").startswith(OPENAI_PREFIX):
        return openai_error_response(exc)
    return error_response(exc, request_id)
