"""One call through Gradio's queue API, the part every Gradio endpoint shares.

``POST {prefix}/call/{api}`` with ``{"data": [...]}`` returns an event id; ``GET
{prefix}/call/{api}/{id}`` streams ``generating`` / ``complete`` / ``error`` / ``heartbeat``
events. A chain (``user`` then ``.then(bot)``) runs its first event to its end in the same
Gradio session; an answer cut at its budget is stopped with ``POST {prefix}/cancel``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from msgspec import Struct

from proxy.errors import UpstreamBadResponse, UpstreamDisconnected
from proxy.upstreams.body_reads import BodyReader
from proxy.upstreams.gradio_data import follow_data
from proxy.upstreams.gradio_errors import app_error
from proxy.upstreams.gradio_plan import EndpointPlan
from proxy.upstreams.http import HTTPUpstream, status_error
from proxy.upstreams.retries import before_output, with_retries
from proxy.upstreams.sse import SSEDecoder

logger = logging.getLogger("proxy.upstream.gradio")

# A private Space answers 404 to a token without access (gradio issue #6388).
AUTH_STATUSES = (401, 403, 404)
# The events of a result stream that carry output or its failure.
OUTPUT_EVENTS = ("generating", "complete", "error")
# How long stopping a generation at the Space (POST {prefix}/cancel) may take.
CANCEL_TIMEOUT = 2.0


class CallState(Struct):
    """One call at the Space: its session and event (what a cancel names), and whether it
    completed."""

    session: str = ""
    event_id: str = ""
    completed: bool = False


class GradioQueue(HTTPUpstream):
    """The queue API's calls, for ``GradioUpstream``; the two hooks say what a call learnt."""

    def _app_changed(self) -> None:
        """A submit was answered 404 or 500: the app may have changed."""

    def _call_completed(self) -> None:
        """A call ran to its ``complete`` event."""

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
                    self._app_changed()
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
        reader: BodyReader,
        decoder: SSEDecoder,
        wait_until: float | None,
        deadline: float | None,
    ) -> list[tuple[str, str]]:
        """The output events in the stream's next chunk (maybe none); raises at its end."""
        chunk = await self.next_chunk(reader, wait_until=wait_until, deadline=deadline)
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
            reader = BodyReader(resp)
            decoder = SSEDecoder()
            try:
                while True:
                    events = await self._output_events(reader, decoder, wait_until, deadline)
                    for event, raw in events:
                        payload = self._payload(event, raw)
                        if event == "complete":
                            return payload
            finally:
                reader.release()

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

        async def open_once() -> tuple[BodyReader, SSEDecoder, list[tuple[str, str]]]:
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
            reader = BodyReader(resp)
            try:
                if resp.status != 200:
                    raise status_error(resp.status, resp.headers, result_path)
                if resp.content_type != "text/event-stream":
                    raise UpstreamBadResponse("the upstream's result is not an event stream")
                decoder = SSEDecoder()
                while not (
                    found := await self._output_events(reader, decoder, first_deadline, deadline)
                ):
                    pass  # heartbeats and other events: no output yet
                if found[0][0] == "error":
                    self._payload(*found[0])  # raises the Space's error
                return reader, decoder, found
            except Exception as exc:
                reader.release()
                raise before_output(self._translate(exc)) from None
            except BaseException:  # cancelled (the client left, a deadline): release it too
                reader.release()
                raise

        with self.translated():
            async with asyncio.timeout_at(deadline):
                reader, decoder, first = await with_retries(
                    open_once,
                    retries=self._retries,
                    deadline=retry_deadline,
                    retry_after_max=self._retry_after_max,
                    give_up_on=self._give_up_on,
                )
            try:
                pending = first
                while True:
                    for event, raw in pending:
                        payload = self._payload(event, raw)
                        if event == "complete":
                            # Before the yield: a caller may close us right after it.
                            self._call_completed()
                            call.completed = True
                            yield event, payload
                            return
                        yield event, payload
                    pending = await self._output_events(reader, decoder, deadline, deadline)
            finally:
                # Back to the pool when fully read; aiohttp closes it when it is not, which
                # is also how an abandoned stream is cancelled at the Space.
                reader.release()
