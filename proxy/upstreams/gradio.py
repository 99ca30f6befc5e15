"""The ``gradio`` upstream: a Gradio app or Hugging Face Space, through its queue API.

One call is Gradio's documented two-step flow on one pooled aiohttp session:
``POST {prefix}/call/{api}`` with ``{"data": [...]}`` returns an event id, then
``GET {prefix}/call/{api}/{id}`` streams ``generating`` / ``complete`` / ``error`` /
``heartbeat`` events. The prefix and the endpoints' parameters are discovered from ``/config``
and ``{prefix}/info``, at start-up and again lazily while the app is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from proxy.core.generation import Chunk, FinishReason, Generation, GenerationRequest
from proxy.core.upstream import Readiness
from proxy.errors import (
    GatewayError,
    UpstreamBadResponse,
    UpstreamDisconnected,
    UpstreamStarting,
)
from proxy.observe.record import current_record
from proxy.upstreams.gradio_app import AppAPI
from proxy.upstreams.gradio_data import build_data, follow_data, prompt_value, result_text
from proxy.upstreams.gradio_errors import app_error
from proxy.upstreams.gradio_plan import (
    EndpointPlan,
    choose_endpoint,
    choose_stream_endpoint,
    plan_endpoint,
)
from proxy.upstreams.gradio_reply import ReplyFilter, Shown
from proxy.upstreams.http import (
    HTTPOptions,
    HTTPUpstream,
    before_output,
    status_error,
    with_retries,
)
from proxy.upstreams.sse import SSEDecoder

logger = logging.getLogger("proxy.upstream.gradio")

# After a failed discovery, requests within this many seconds get the same error at once
# instead of each hammering an app that is down.
REDISCOVER_AFTER = 2.0
# A private Space answers 404 to a token without access (gradio issue #6388).
AUTH_STATUSES = (401, 403, 404)
# The events of a result stream that carry output or its failure.
OUTPUT_EVENTS = ("generating", "complete", "error")
# How long stopping a generation at the Space (POST {prefix}/cancel) may take.
CANCEL_TIMEOUT = 2.0


@dataclass(slots=True)
class CallState:
    """One call at the Space: its session and event (what a cancel names), and whether it
    completed."""

    session: str = ""
    event_id: str = ""
    completed: bool = False


def _asked(req: GenerationRequest, field: str) -> bool:
    """Whether ``req`` carries ``field``: the sampling options only when the caller set them;
    temperature, top_p and do_sample always (the gateway fills them in)."""
    if field == "top_k":
        return req.top_k is not None
    if field == "repetition_penalty":
        return req.repetition_penalty is not None
    return True


@dataclass(frozen=True, slots=True)
class Discovery:
    main: EndpointPlan
    stream: EndpointPlan | None


class GradioUpstream(HTTPUpstream):
    """Calls one Gradio app. Safe for many concurrent requests; one instance per app."""

    name = "gradio"

    def __init__(
        self,
        base_url: str,
        options: HTTPOptions,
        *,
        api_name: str | None,
        stream_api_name: str | None = None,
    ) -> None:
        super().__init__(base_url, options)
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

    async def _submit(self, path: str, data: list[Any], session: str | None) -> str:
        body: dict[str, Any] = {"data": data}
        if session is not None:
            body["session_hash"] = session
        async with self.session.post(
            self.base_url + path,
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
        ) as resp:
            if resp.status != 200:
                if resp.status in (404, 500):
                    self._discovery = None  # the app may have changed: rediscover next time
                raise status_error(
                    resp.status,
                    resp.headers,
                    f"POST {path}",
                    message=self.explain(await resp.content.read(4096)),
                    auth_statuses=AUTH_STATUSES,
                )
            answer = await self.read_answer(resp, f"POST {path}", limit=1 << 16)
        try:
            return str(orjson.loads(answer)["event_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise UpstreamBadResponse(
                f"the upstream's answer to POST {path} has no event_id"
            ) from None

    def _payload(self, event: str, raw: str) -> Any:
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse("the upstream sent an event that is not JSON") from None
        if event == "error":
            raise app_error(payload, self.redact)
        return payload

    async def _output_events(
        self,
        resp: aiohttp.ClientResponse,
        decoder: SSEDecoder,
        wait_until: float | None,
        deadline: float | None,
    ) -> list[tuple[str, str]]:
        """The output events in the stream's next chunk (maybe none); raises at its end."""
        chunk = await self.next_chunk(resp, wait_until=wait_until, deadline=deadline)
        if not chunk:
            raise UpstreamDisconnected("the upstream closed the result stream before completing")
        return [(e, r) for e, r in decoder.feed(chunk) if e in OUTPUT_EVENTS]

    async def _run_first(
        self,
        plan: EndpointPlan,
        data: list[Any],
        session: str,
        *,
        wait_until: float | None,
        deadline: float | None,
    ) -> Any:
        """The first event of a chain (``user`` before ``.then(bot)``), run to its end in
        ``session``: its outputs, which the follow-up reads."""
        event_id = await self._submit(plan.call_path, data, session)
        url = f"{self.base_url}{plan.call_path}/{quote(event_id, safe='')}"
        async with self.session.get(url) as resp:
            if resp.status != 200:
                raise status_error(resp.status, resp.headers, f"GET {plan.call_path}/<id>")
            decoder = SSEDecoder()
            while True:
                for event, raw in await self._output_events(resp, decoder, wait_until, deadline):
                    payload = self._payload(event, raw)
                    if event == "complete":
                        return payload

    async def _stop(self, plan: EndpointPlan, call: CallState) -> None:
        """After an answer cut at its budget, ask the Space to stop the generation still
        running: Gradio's own ``POST {prefix}/cancel``, bounded, failures ignored."""
        fn_index = plan.answer_fn_index
        if call.completed or not call.session or fn_index is None:
            return
        body = {"session_hash": call.session, "fn_index": fn_index, "event_id": call.event_id}
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                async with self.session.post(
                    f"{self.base_url}{plan.prefix}/cancel",
                    data=orjson.dumps(body),
                    headers={"Content-Type": "application/json"},
                ) as resp:
                    await resp.content.read(4096)
        except (aiohttp.ClientError, TimeoutError):
            logger.debug("the upstream did not confirm the cancel of a cut answer")

    async def _call(
        self,
        plan: EndpointPlan,
        data: list[Any],
        call: CallState,
        *,
        streaming: bool,
        deadline: float | None,
    ) -> AsyncGenerator[tuple[str, Any], None]:
        """The ``generating`` and ``complete`` payloads of one call, ending with ``complete``.

        A chain's first event runs to its end first, in the same session. Every failure is
        raised as a GatewayError. With a ``deadline`` (loop time) each wait is bounded by it;
        without one the caller bounds the whole call.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        retry_deadline = deadline if deadline is not None else start + self._total_timeout
        # A stream must show its first token by then; a whole reply has the total deadline.
        first_deadline = (
            min(start + self._first_token_timeout, retry_deadline) if streaming else deadline
        )
        path = plan.answer_path
        result_path = f"GET {path}/<id>"

        async def open_once() -> tuple[aiohttp.ClientResponse, SSEDecoder, list[tuple[str, str]]]:
            """Submit, open the result stream and read it to its first event: everything up
            to there may be retried, since the Space has produced nothing yet (a full queue
            or a busy GPU said in an error event included)."""
            try:
                # A session of our own: the state a chain keeps between its two events,
                # and what a cancel names.
                call.session = secrets.token_hex(8)
                body = data
                if plan.follow is not None:
                    first = await self._run_first(
                        plan, data, call.session, wait_until=first_deadline, deadline=deadline
                    )
                    body = follow_data(plan.follow, first)
                call.event_id = await self._submit(path, body, call.session)
                resp = await self.session.get(
                    f"{self.base_url}{path}/{quote(call.event_id, safe='')}"
                )
            except Exception as exc:
                raise before_output(self._translate(exc)) from None
            try:
                if resp.status != 200:
                    raise status_error(resp.status, resp.headers, result_path)
                if resp.content_type != "text/event-stream":
                    raise UpstreamBadResponse("the upstream's result is not an event stream")
                decoder = SSEDecoder()
                while not (
                    found := await self._output_events(resp, decoder, first_deadline, deadline)
                ):
                    pass  # heartbeats and other events: no output yet
                if found[0][0] == "error":
                    self._payload(*found[0])  # raises the Space's error
                return resp, decoder, found
            except Exception as exc:
                resp.release()
                raise before_output(self._translate(exc)) from None
            except BaseException:  # cancelled (the client left, a deadline): release it too
                resp.release()
                raise

        with self.translated():
            async with asyncio.timeout_at(deadline):
                resp, decoder, first = await with_retries(
                    open_once,
                    retries=self._retries,
                    deadline=retry_deadline,
                    retry_after_max=self._retry_after_max,
                )
            try:
                pending = first
                while True:
                    for event, raw in pending:
                        payload = self._payload(event, raw)
                        if event == "complete":
                            # Before the yield: a caller may close us right after it.
                            self._last_failure = None
                            call.completed = True
                            yield event, payload
                            return
                        yield event, payload
                    pending = await self._output_events(resp, decoder, deadline, deadline)
            finally:
                # Back to the pool when fully read; aiohttp closes it when it is not, which
                # is also how an abandoned stream is cancelled at the Space.
                resp.release()

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
