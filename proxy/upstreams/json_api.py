"""What the JSON-over-HTTP upstreams (TGI, OpenAI-compatible servers) share: a pooled session
with the token as ``Authorization: Bearer``, POSTs whose error bodies become gateway errors,
and ``data:`` event streams, all under one deadline per call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson

from proxy.errors import GatewayError, UpstreamBadResponse, UpstreamBusy, UpstreamUnreachable
from proxy.sse import SSEDecoder
from proxy.upstreams.base import Readiness
from proxy.upstreams.http import HTTPUpstream, status_error


def error_message(body: bytes) -> str | None:
    """The explanation in an upstream's error body: TGI ``{"error": "..."}``, OpenAI
    ``{"error": {"message": ...}}``, vLLM ``{"message": ...}``, or None."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    message = error if isinstance(error, str) else data.get("message")
    return str(message) if message else None


class JSONUpstream(HTTPUpstream):
    """Base of the TGI and OpenAI-compatible adapters; subclasses build bodies and read replies."""

    name = "json"
    health_path = "/health"

    def _failed(self, exc: Exception) -> GatewayError:
        error = self._translate(exc)
        if isinstance(error, UpstreamUnreachable | UpstreamBusy):
            self._last_failure = error
        return error

    def _status_error(self, resp: aiohttp.ClientResponse, body: bytes, path: str) -> GatewayError:
        message = error_message(body)
        if message and self._token:
            message = message.replace(self._token, "[redacted]")
        return status_error(resp.status, resp.headers, f"POST {path}", message=message)

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` and return the decoded JSON answer; raises GatewayError."""
        try:
            async with asyncio.timeout(self._total_timeout):
                async with self.session.post(
                    self.base_url + path,
                    data=orjson.dumps(body),
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    raw = await resp.read()
                    if resp.status != 200:
                        raise self._status_error(resp, raw, path)
        except Exception as exc:
            raise self._failed(exc) from None
        self._last_failure = None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse(f"the upstream's answer to POST {path} is not JSON") from None

    async def post_events(self, path: str, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        """POST ``body`` and yield the decoded JSON of each ``data:`` event until the stream
        ends or sends ``[DONE]``. Closing the generator closes the upstream connection."""
        deadline = asyncio.get_running_loop().time() + self._total_timeout
        try:
            async with asyncio.timeout_at(deadline):
                resp = await self.session.post(
                    self.base_url + path,
                    data=orjson.dumps(body),
                    headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
                )
            try:
                if resp.status != 200:
                    async with asyncio.timeout_at(deadline):
                        raw = await resp.read()
                    raise self._status_error(resp, raw, path)
                decoder = SSEDecoder()
                while True:
                    async with asyncio.timeout_at(deadline):
                        chunk = await resp.content.readany()
                    if not chunk:
                        return
                    for _, data in decoder.feed(chunk):
                        if data.strip() == "[DONE]":
                            return
                        try:
                            yield orjson.loads(data)
                        except orjson.JSONDecodeError:
                            raise UpstreamBadResponse(
                                "the upstream sent an event that is not JSON"
                            ) from None
            finally:
                resp.release()
        except Exception as exc:
            error = self._failed(exc)
            if error is exc:
                raise
            raise error from None

    async def ready(self) -> Readiness:
        try:
            async with asyncio.timeout(self._connect_timeout):
                async with self.session.get(self.base_url + self.health_path) as resp:
                    if resp.status != 200:
                        raise self._status_error(resp, await resp.read(), self.health_path)
        except Exception as exc:
            error = self._failed(exc)
            return Readiness(False, error.message, error)
        self._last_failure = None
        return Readiness(True, f"{self.name} server at {self.base_url}")
