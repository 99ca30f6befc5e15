"""The ``gradio`` upstream: a Gradio app or Hugging Face Space, through its queue API.

One call is Gradio's documented two-step flow on one pooled aiohttp session:
``POST {prefix}/call/{api}`` with ``{"data": [...]}`` returns an event id, then
``GET {prefix}/call/{api}/{id}`` streams ``generating`` / ``complete`` / ``error`` /
``heartbeat`` events. The prefix and the endpoint's parameters are discovered from ``/config``
and ``{prefix}/info``, at start-up and again lazily while the app is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from proxy.errors import (
    GatewayError,
    UpstreamAppError,
    UpstreamAuth,
    UpstreamBadResponse,
    UpstreamBusy,
    UpstreamFailure,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.generation import Generation, GenerationRequest
from proxy.sse import SSEDecoder
from proxy.upstreams.base import Readiness
from proxy.upstreams.gradio_api import (
    EndpointPlan,
    build_data,
    choose_endpoint,
    plan_endpoint,
    result_text,
)

logger = logging.getLogger("proxy.upstream.gradio")

# After a failed discovery, requests within this many seconds get the same error at once
# instead of each hammering an app that is down.
REDISCOVER_AFTER = 2.0
DEFAULT_RETRY_AFTER = {429: 30, 503: 10}


def _retry_after(headers: Mapping[str, str], status: int) -> int:
    value = headers.get("Retry-After", "")
    return int(value) if value.isdigit() else DEFAULT_RETRY_AFTER.get(status, 10)


def status_error(status: int, headers: Mapping[str, str], stage: str) -> UpstreamFailure:
    """The gateway error for an unexpected HTTP status from the app at ``stage``."""
    if status in (401, 403, 404):
        return UpstreamAuth(
            f"the upstream refused {stage} with HTTP {status}: the Space is private and HF_TOKEN "
            "lacks access, or UPSTREAM_URL is wrong; the operator should check both"
        )
    if status == 429:
        return UpstreamRateLimited(
            "the upstream is rate limiting the gateway; retry later",
            retry_after=_retry_after(headers, status),
        )
    if status in (502, 503, 504):
        return UpstreamBusy(
            f"the upstream is busy, asleep or starting (HTTP {status} on {stage}); retry later",
            retry_after=_retry_after(headers, 503),
        )
    return UpstreamBadResponse(f"the upstream answered {stage} with HTTP {status}")


class GradioUpstream:
    """Calls one Gradio app. Safe for many concurrent requests; one instance per app."""

    name = "gradio"

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        api_name: str | None,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float,
        max_connections: int,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.identity = f"gradio {self.base_url} {api_name or 'auto'}"
        self._token = token
        self._api_name = api_name
        self._total_timeout = total_timeout
        self._read_timeout = read_timeout
        self._connect_timeout = connect_timeout
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._plan: EndpointPlan | None = None
        self._plan_lock = asyncio.Lock()
        self._discovery_error: GatewayError | None = None
        self._discovery_failed_at = 0.0
        self._last_failure: GatewayError | None = None

    @property
    def plan(self) -> EndpointPlan | None:
        """The discovered endpoint, or None while discovery has not succeeded."""
        return self._plan

    def _headers(self) -> dict[str, str]:
        # The Space proxy strips Authorization before the app; X-HF-Authorization reaches the
        # proxy's auth check and is what gradio_client sends (gradio PR #11700).
        headers = {"Accept": "application/json"}
        if self._token:
            headers["X-HF-Authorization"] = f"Bearer {self._token}"
        return headers

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers=self._headers(),
            read_bufsize=2**20,
            # Upstream cookies are never kept: they would be shared by every browser user.
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )
        try:
            await self._ensure_plan()
        except GatewayError as exc:
            logger.warning("upstream discovery failed (will retry on demand): %s", exc.message)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("GradioUpstream.start() was not called")
        return self._session

    def _translate(self, exc: Exception) -> GatewayError:
        """The gateway error for a transport failure (aiohttp errors and timeouts)."""
        if isinstance(exc, GatewayError):
            return exc
        if isinstance(exc, aiohttp.ServerTimeoutError):
            return UpstreamTimeout(f"the upstream sent nothing for {self._read_timeout:g} s")
        if isinstance(exc, TimeoutError):
            return UpstreamTimeout(f"no result from the upstream within {self._total_timeout:g} s")
        if isinstance(exc, aiohttp.ClientConnectorError):
            return UpstreamUnreachable(
                "cannot connect to the upstream; it may be down or UPSTREAM_URL may be wrong"
            )
        if isinstance(
            exc,
            aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientOSError,
        ):
            # A ClientOSError that is not a connect error is a reset mid-request.
            return UpstreamBadResponse(
                "the upstream closed the connection before answering",
                code="upstream_disconnected",
            )
        return UpstreamUnreachable(f"the connection to the upstream failed ({type(exc).__name__})")

    async def _get_json(self, path: str, stage: str) -> Any:
        async with self.session.get(self.base_url + path) as resp:
            if resp.status != 200:
                raise status_error(resp.status, resp.headers, stage)
            body = await resp.read()
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse(
                f"the upstream's {stage} is not JSON: UPSTREAM_URL may not point to a Gradio app, "
                "or the Space is showing a status page"
            ) from None

    async def _discover(self) -> EndpointPlan:
        config = await self._get_json("/config", "GET /config")
        if not isinstance(config, dict):
            raise UpstreamBadResponse("the upstream's /config is not a Gradio config")
        prefix = str(config.get("api_prefix") or "").rstrip("/")
        info = await self._get_json(f"{prefix}/info", f"GET {prefix}/info")
        if not isinstance(info, dict):
            raise UpstreamBadResponse("the upstream's /info is not a Gradio API description")
        api_name = choose_endpoint(info, self._api_name)
        plan = plan_endpoint(info, api_name, prefix=prefix)
        logger.info(
            "upstream endpoint %s (gradio %s): %s",
            api_name,
            config.get("version", "?"),
            "; ".join(p.describe() for p in plan.params),
        )
        return plan

    async def _ensure_plan(self) -> EndpointPlan:
        if self._plan is not None:
            return self._plan
        async with self._plan_lock:
            if self._plan is not None:
                return self._plan
            recent = time.monotonic() - self._discovery_failed_at < REDISCOVER_AFTER
            if self._discovery_error is not None and recent:
                raise self._discovery_error
            try:
                async with asyncio.timeout(self._connect_timeout + 10):
                    self._plan = await self._discover()
            except Exception as exc:
                error = self._translate(exc)
                self._discovery_error, self._discovery_failed_at = error, time.monotonic()
                raise error from None
            self._discovery_error = None
            return self._plan

    async def _submit(self, plan: EndpointPlan, data: list[Any]) -> str:
        async with self.session.post(
            self.base_url + plan.call_path,
            data=orjson.dumps({"data": data}),
            headers={"Content-Type": "application/json"},
        ) as resp:
            if resp.status != 200:
                if resp.status in (404, 500):
                    self._plan = None  # the app may have changed: rediscover next time
                raise status_error(resp.status, resp.headers, f"POST {plan.call_path}")
            body = await resp.read()
        try:
            return str(orjson.loads(body)["event_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise UpstreamBadResponse(
                f"the upstream's answer to POST {plan.call_path} has no event_id"
            ) from None

    def _app_error(self, payload: Any) -> UpstreamFailure:
        message = payload.get("error") if isinstance(payload, dict) else payload
        if not message:
            return UpstreamAppError(
                "the upstream app raised an error without details "
                "(its owner can launch it with show_error=True)"
            )
        text = str(message)[:500]
        if self._token:
            text = text.replace(self._token, "[redacted]")
        if "gpu quota" in text.lower():
            return UpstreamRateLimited(f"the upstream is out of GPU quota: {text}", retry_after=60)
        return UpstreamAppError(f"the upstream reported: {text}")

    def _payload(self, event: str, raw: str) -> Any:
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse("the upstream sent an event that is not JSON") from None
        if event == "error":
            raise self._app_error(payload)
        return payload

    async def _call(
        self, req: GenerationRequest, *, deadline: float | None
    ) -> AsyncGenerator[tuple[str, Any], None]:
        """The ``generating`` and ``complete`` payloads of one call, ending with ``complete``.

        Every failure is raised as a GatewayError. With a ``deadline`` (loop time) each wait
        is bounded by it; without one the caller bounds the whole call.
        """
        plan = await self._ensure_plan()
        data = build_data(plan, req)
        try:
            async with asyncio.timeout_at(deadline):
                event_id = await self._submit(plan, data)
                result_url = f"{self.base_url}{plan.call_path}/{quote(event_id, safe='')}"
                resp = await self.session.get(result_url)
            try:
                if resp.status != 200:
                    raise status_error(resp.status, resp.headers, f"GET {plan.call_path}/<id>")
                if resp.content_type != "text/event-stream":
                    raise UpstreamBadResponse("the upstream's result is not an event stream")
                decoder = SSEDecoder()
                while True:
                    if deadline is None:
                        chunk = await resp.content.readany()
                    else:
                        async with asyncio.timeout_at(deadline):
                            chunk = await resp.content.readany()
                    if not chunk:
                        raise UpstreamBadResponse(
                            "the upstream closed the result stream before completing",
                            code="upstream_disconnected",
                        )
                    for event, raw in decoder.feed(chunk):
                        if event in ("generating", "complete", "error"):
                            payload = self._payload(event, raw)
                            yield event, payload
                            if event == "complete":
                                self._last_failure = None
                                return
            finally:
                # Back to the pool when fully read; aiohttp closes it when it is not.
                resp.release()
        except Exception as exc:
            error = self._translate(exc)
            if isinstance(error, UpstreamUnreachable | UpstreamBusy | UpstreamTimeout):
                self._last_failure = error
            if error is exc:
                raise
            raise error from None

    async def generate(self, req: GenerationRequest) -> Generation:
        # One deadline around the whole call: nothing else runs between its events here.
        try:
            async with asyncio.timeout(self._total_timeout):
                async with aclosing(self._call(req, deadline=None)) as events:
                    async for event, payload in events:
                        if event == "complete":
                            text = result_text(payload)
                            return Generation(text=text, model=req.model.name, upstream=self.name)
        except TimeoutError:
            self._last_failure = self._translate(TimeoutError())
            raise self._last_failure from None
        raise AssertionError("_call ends with complete or raises")  # pragma: no cover

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[str, None]:
        # Gradio's generating events carry the whole text so far; send what is new.
        sent = ""
        deadline = asyncio.get_running_loop().time() + self._total_timeout
        async with aclosing(self._call(req, deadline=deadline)) as events:
            async for _, payload in events:
                text = result_text(payload)
                if text.startswith(sent) and len(text) > len(sent):
                    yield text[len(sent) :]
                    sent = text

    async def ready(self) -> Readiness:
        try:
            plan = await self._ensure_plan()
        except GatewayError as exc:
            return Readiness(False, exc.message, exc)
        if self._last_failure is not None:
            failure = self._last_failure
            return Readiness(False, f"last call failed: {failure.message}", failure)
        return Readiness(True, f"gradio endpoint {plan.api_name} at {self.base_url}")
