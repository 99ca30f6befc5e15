"""What the JSON-over-HTTP upstreams (TGI, OpenAI-compatible servers) share: a pooled session
with the token as ``Authorization: Bearer``, POSTs whose error bodies become gateway errors,
and ``data:`` event streams, all under one deadline per call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import orjson

from proxy.core.upstream import Readiness
from proxy.errors import (
    GatewayError,
    UpstreamBadResponse,
)
from proxy.upstreams.body_reads import BodyReader
from proxy.upstreams.http import HTTPUpstream, status_error
from proxy.upstreams.retries import before_output, with_retries
from proxy.upstreams.sse import SSEDecoder


class JSONUpstream(HTTPUpstream):
    """Base of the TGI and OpenAI-compatible adapters; subclasses build bodies and read replies."""

    name = "json"
    health_path = "/health"

    def _status_error(self, resp: aiohttp.ClientResponse, body: bytes, path: str) -> GatewayError:
        return status_error(resp.status, resp.headers, f"POST {path}", message=self.explain(body))

    async def _open(
        self, path: str, body: dict[str, Any], headers: dict[str, str], deadline: float
    ) -> aiohttp.ClientResponse:
        """The upstream's response to POST ``body`` once its status is 200, retried while it
        fails before any output (connect errors, 503s)."""

        async def attempt() -> aiohttp.ClientResponse:
            try:
                resp = await self.session.post(
                    self.base_url + path, data=orjson.dumps(body), headers=headers
                )
            except Exception as exc:
                raise before_output(self._translate(exc)) from None
            if resp.status == 200:
                return resp
            try:
                raw = await resp.content.read(4096)  # an explanation, not a novel
            finally:
                resp.release()
            error = self._status_error(resp, raw, path)
            raise before_output(error) from None

        return await with_retries(
            attempt,
            retries=self._retries,
            deadline=deadline,
            retry_after_max=self._retry_after_max,
            give_up_on=self._give_up_on,
        )

    async def post_json(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` and return the decoded JSON answer; raises GatewayError."""
        deadline = asyncio.get_running_loop().time() + self._total_timeout
        with self.translated():
            async with asyncio.timeout_at(deadline):
                resp = await self._open(path, body, {"Content-Type": "application/json"}, deadline)
                async with resp:
                    raw = await self.read_answer(resp, f"POST {path}")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse(f"the upstream's answer to POST {path} is not JSON") from None

    async def post_events(self, path: str, body: dict[str, Any]) -> AsyncGenerator[Any, None]:
        """POST ``body`` and yield the decoded JSON of each ``data:`` event until the stream
        ends or sends ``[DONE]``. Closing the generator closes the upstream connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total_timeout
        first_deadline = min(loop.time() + self._first_token_timeout, deadline)
        with self.translated():
            async with asyncio.timeout_at(first_deadline):
                resp = await self._open(
                    path,
                    body,
                    {"Content-Type": "application/json", "Accept": "text/event-stream"},
                    first_deadline,
                )
            reader = BodyReader(resp)
            try:
                decoder = SSEDecoder()
                wait_until = first_deadline
                while True:
                    chunk = await self.next_chunk(reader, wait_until=wait_until, deadline=deadline)
                    wait_until = deadline
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
                reader.release()

    async def ready(self) -> Readiness:
        try:
            async with asyncio.timeout(self._connect_timeout):
                async with self.session.get(self.base_url + self.health_path) as resp:
                    if resp.status != 200:
                        raise self._status_error(
                            resp, await resp.content.read(4096), self.health_path
                        )
        except Exception as exc:
            error = self._translate(exc)
            return Readiness(False, error.message, error)
        return Readiness(True, f"{self.name} server at {self.base_url}")
