"""The ``gradio`` upstream: a Gradio app or Hugging Face Space, through its queue API.

The prefix and the endpoints' parameters are discovered from ``/config`` and
``{prefix}/info``, at start-up and again lazily while the app is unreachable; each request is
mapped onto the chosen endpoint's parameters and called through ``gradio_queue.py`` on one
pooled aiohttp session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import orjson
from msgspec import Struct

from proxy.core.generation import Chunk, FinishReason, Generation, GenerationRequest
from proxy.core.upstream import Readiness
from proxy.errors import (
    GatewayError,
    UpstreamBadResponse,
    UpstreamStarting,
)
from proxy.observe.record import current_record
from proxy.upstreams.gradio_app import AppAPI
from proxy.upstreams.gradio_data import build_data, prompt_value, result_text
from proxy.upstreams.gradio_plan import (
    EndpointPlan,
    choose_endpoint,
    choose_stream_endpoint,
    plan_endpoint,
)
from proxy.upstreams.gradio_queue import AUTH_STATUSES, CallState, GradioQueue
from proxy.upstreams.gradio_reply import ReplyFilter, Shown
from proxy.upstreams.http import (
    HTTPOptions,
    status_error,
)

logger = logging.getLogger("proxy.upstream.gradio")

# After a failed discovery, requests within this many seconds get the same error at once
# instead of each hammering an app that is down.
REDISCOVER_AFTER = 2.0


def _asked(req: GenerationRequest, field: str) -> bool:
    """Whether ``req`` carries ``field``: the sampling options only when the caller set them;
    temperature, top_p and do_sample always (the gateway fills them in)."""
    if field == "top_k":
        return req.top_k is not None
    if field == "repetition_penalty":
        return req.repetition_penalty is not None
    return True


class Discovery(Struct, frozen=True):
    main: EndpointPlan
    stream: EndpointPlan | None


class GradioUpstream(GradioQueue):
    """Calls one Gradio app. Safe for many concurrent requests; one instance per app."""

    name = "gradio"

    def __init__(
        self,
        base_url: str,
        options: HTTPOptions,
        *,
        api_name: str | None,
        stream_api_name: str | None = None,
        shared_session: bool = True,
    ) -> None:
        super().__init__(base_url, options, shared_session=shared_session)
        self.identity = f"gradio {self.base_url} {api_name or 'auto'}"
        self._api_name = api_name
        self._stream_api_name = stream_api_name
        self._discovery: Discovery | None = None
        # The last call's failure when it said the Space cannot serve now, for /readyz.
        self._last_failure: GatewayError | None = None
        self._plan_lock = asyncio.Lock()
        self._discovery_error: GatewayError | None = None
        self._discovery_failed_at = 0.0

    def auth_headers(self) -> dict[str, str]:
        # The Space proxy strips Authorization before the app; X-HF-Authorization reaches the
        # proxy's auth check and is what gradio_client sends (gradio PR #11700).
        return {"X-HF-Authorization": f"Bearer {self._token}"} if self._token else {}

    async def start(self) -> None:
        await super().start()
        try:
            await self._ensure_discovery()
        except GatewayError as exc:
            logger.warning("upstream discovery failed (will retry on demand): %s", exc.message)

    async def _get_json(self, path: str, stage: str) -> Any:
        async with self.session.get(self.base_url + path) as resp:
            if resp.status != 200:
                raise status_error(resp.status, resp.headers, stage, auth_statuses=AUTH_STATUSES)
            body = await self.read_answer(resp, stage)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamStarting(
                f"the upstream's {stage} is a page, not JSON: a Space that is asleep or "
                "building shows one; if this persists, check that UPSTREAM_URL is a Gradio app",
                retry_after=10,
            ) from None

    async def _discover(self) -> Discovery:
        config = await self._get_json("/config", "GET /config")
        if not isinstance(config, dict):
            raise UpstreamBadResponse("the upstream's /config is not a Gradio config")
        prefix = str(config.get("api_prefix") or "").rstrip("/")
        info = await self._get_json(f"{prefix}/info", f"GET {prefix}/info")
        if not isinstance(info, dict):
            raise UpstreamBadResponse("the upstream's /info is not a Gradio API description")
        app = AppAPI.of(info, config)
        main = plan_endpoint(app, choose_endpoint(app, self._api_name), prefix=prefix)
        stream_name = choose_stream_endpoint(app, self._stream_api_name, main=main.api_name)
        stream = plan_endpoint(app, stream_name, prefix=prefix) if stream_name else None
        for plan in (main, stream):
            if plan is not None:
                logger.info(
                    "upstream endpoint %s (gradio %s): %s",
                    plan.api_name,
                    config.get("version", "?"),
                    "; ".join(plan.describe()),
                )
        return Discovery(main, stream)

    async def _ensure_discovery(self) -> Discovery:
        if self._discovery is not None:
            return self._discovery
        async with self._plan_lock:
            if self._discovery is not None:
                return self._discovery
            recent = time.monotonic() - self._discovery_failed_at < REDISCOVER_AFTER
            if self._discovery_error is not None and recent:
                self._discovery_error.replayed = True
                raise self._discovery_error
            try:
                async with asyncio.timeout(self._connect_timeout + 10):
                    self._discovery = await self._discover()
            except Exception as exc:
                error = self._translate(exc)
                self._discovery_error, self._discovery_failed_at = error, time.monotonic()
                raise error from None
            self._discovery_error = None
            return self._discovery

    def _app_changed(self) -> None:
        self._discovery = None  # rediscover next time

    def _call_completed(self) -> None:
        self._last_failure = None

    def _note_failure(self, error: GatewayError) -> None:
        if error.unavailable:  # /readyz says so until a call succeeds
            self._last_failure = error

    async def _prepare(
        self, req: GenerationRequest, *, streaming: bool
    ) -> tuple[EndpointPlan, list[Any], ReplyFilter]:
        """The endpoint for ``req``, its data, and the filter its reply goes through."""
        discovery = await self._ensure_discovery()
        plan = (discovery.stream or discovery.main) if streaming else discovery.main
        prompt = prompt_value(plan, req)
        data = build_data(plan, req, prompt)
        shown = ReplyFilter(
            prompt,
            req,
            budget_taken=plan.takes("max_new_tokens"),
            templated=plan.kind == "prompt",
        )
        record = current_record()
        ignored = [f for f in plan.not_taken if f != "max_new_tokens" and _asked(req, f)]
        if record is not None and ignored:
            record.ignored = tuple(ignored)
        return plan, data, shown

    async def generate(self, req: GenerationRequest) -> Generation:
        plan, data, shown = await self._prepare(req, streaming=False)
        output = plan.answer_output
        # The text so far matters only when the gateway keeps the budget itself.
        watch = not plan.takes("max_new_tokens")
        call = CallState()
        view = Shown("")
        # One deadline around the whole call: nothing else runs between its events here.
        try:
            async with asyncio.timeout(self._total_timeout):
                events = self._call(plan, data, call, streaming=False, deadline=None)
                async with aclosing(events):
                    async for event, payload in events:
                        if event != "complete" and not watch:
                            continue
                        view = shown.view(result_text(payload, output), final=event == "complete")
                        if view.cut or event == "complete":
                            break
        except TimeoutError:
            self._last_failure = self._translate(TimeoutError())
            raise self._last_failure from None
        if view.cut:
            await self._stop(plan, call)
        finish: FinishReason = "length" if view.cut else "stop"
        return Generation(view.text, req.model.name, self.name, finish)

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        # Gradio's generating events carry the whole text so far, so each is diffed against
        # what was sent. A Space that rewrites earlier text gets a replace chunk.
        plan, data, shown = await self._prepare(req, streaming=True)
        output = plan.answer_output
        deadline = asyncio.get_running_loop().time() + self._total_timeout
        sent = ""
        call = CallState()
        cut = False
        events = self._call(plan, data, call, streaming=True, deadline=deadline)
        async with aclosing(events):
            async for event, payload in events:
                view = shown.view(result_text(payload, output), final=event == "complete")
                text, cut = view.text, view.cut
                finish: FinishReason | None = "length" if cut else None
                if text.startswith(sent):
                    if text != sent or finish:
                        yield Chunk(text[len(sent) :], finish_reason=finish)
                else:
                    yield Chunk(text, replace=True, finish_reason=finish)
                sent = text
                if cut:
                    break
        if cut:
            await self._stop(plan, call)

    async def probe(self) -> Readiness:
        """Discover the app again now (GET /config and /info), forgetting earlier failures:
        the request that wakes a sleeping Space, and the proof that it is up."""
        async with self._plan_lock:
            self._discovery = None
            self._discovery_error = None
        self._last_failure = None
        return await self.ready()

    async def ready(self) -> Readiness:
        try:
            discovery = await self._ensure_discovery()
        except GatewayError as exc:
            return Readiness(False, exc.message, exc)
        if self._last_failure is not None:
            failure = self._last_failure
            return Readiness(False, f"last call failed: {failure.message}", failure)
        return Readiness(True, f"gradio endpoint {discovery.main.api_name} at {self.base_url}")
