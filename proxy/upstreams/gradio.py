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
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping
from typing import Any, TypeVar

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
from proxy.sse import parse_events
from proxy.upstreams.base import Readiness
from proxy.upstreams.gradio_api import (
    EndpointPlan,
    build_data,
    choose_endpoint,
    plan_endpoint,
    result_text,
)

logger = logging.getLogger("proxy.upstream.gradio")
T = TypeVar("T")

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
        self._token = token
        self._api_name = api_name
        self._total_timeout = total_timeout
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
                    self._plan = await self._guard(self._discover())
            except GatewayError as exc:
                self._discovery_error, self._discovery_failed_at = exc, time.monotonic()
                raise
            self._discovery_error = None
            return self._plan

    async def _guard(self, work: Awaitable[T]) -> T:
        """Await ``work``, translating transport errors into gateway errors."""
        try:
            return await work
        except GatewayError:
            raise
        except TimeoutError:
            raise UpstreamTimeout("the upstream did not answer in time") from None
        except aiohttp.ClientConnectorError:
            raise UpstreamUnreachable(
                "cannot connect to the upstream; it may be down or UPSTREAM_URL may be wrong"
            ) from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError):
            # ClientOSError after the connect succeeded: a reset mid-request.
            raise UpstreamBadResponse(
                "the upstream closed the connection before answering",
                code="upstream_disconnected",
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(
                f"the connection to the upstream failed ({type(exc).__name__})"
            ) from None

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
            event_id = orjson.loads(body)["event_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise UpstreamBadResponse(
                f"the upstream's answer to POST {plan.call_path} has no event_id"
            ) from None
        return str(event_id)

    async def _events(
        self, plan: EndpointPlan, event_id: str, deadline: float
    ) -> AsyncIterator[tuple[str, Any]]:
        """``generating`` and ``complete`` payloads; raises on ``error`` or a cut stream."""
        path = f"{plan.call_path}/{event_id}"
        resp = await self._guard(self.session.get(self.base_url + path))
        try:
            if resp.status != 200:
                raise status_error(resp.status, resp.headers, f"GET {plan.call_path}/<id>")
            if not resp.content_type.startswith("text/event-stream"):
                raise UpstreamBadResponse("the upstream's result is not an event stream")
            events = parse_events(resp.content).__aiter__()
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event, raw = await self._guard(anext(events))
                except StopAsyncIteration:
                    raise UpstreamBadResponse(
                        "the upstream closed the result stream before completing",
                        code="upstream_disconnected",
                    ) from None
                except TimeoutError:
                    raise UpstreamTimeout(
                        f"no result from the upstream within {self._total_timeout:g} s"
                    ) from None
                if event == "heartbeat":
                    continue
                try:
                    payload = orjson.loads(raw) if raw else None
                except orjson.JSONDecodeError:
                    raise UpstreamBadResponse(
                        "the upstream sent an event that is not JSON"
                    ) from None
                if event == "error":
                    raise self._app_error(payload)
                if event in ("generating", "complete"):
                    yield event, payload
                    if event == "complete":
                        return
        finally:
            resp.close()

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

    async def _run(self, req: GenerationRequest) -> AsyncIterator[tuple[str, Any]]:
        plan = await self._ensure_plan()
        data = build_data(plan, req)
        deadline = asyncio.get_running_loop().time() + self._total_timeout
        try:
            async with asyncio.timeout_at(deadline):
                event_id = await self._guard(self._submit(plan, data))
            async for item in self._events(plan, event_id, deadline):
                yield item
        except TimeoutError:
            self._last_failure = UpstreamTimeout(
                f"no result from the upstream within {self._total_timeout:g} s"
            )
            raise self._last_failure from None
        except (UpstreamUnreachable, UpstreamBusy) as exc:
            self._last_failure = exc
            raise
        self._last_failure = None

    async def generate(self, req: GenerationRequest) -> Generation:
        text = ""
        async for event, payload in self._run(req):
            if event == "complete":
                text = result_text(payload)
        return Generation(text=text, model=req.model.name, upstream=self.name)

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[str, None]:
        # Gradio's generating events carry the whole text so far; send what is new.
        sent = ""
        async for _, payload in self._run(req):
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
