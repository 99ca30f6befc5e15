"""One call through Gradio's queue API, the part every Gradio endpoint shares.

``POST {prefix}/call/{api}`` with ``{"data": [...]}`` returns an event id; ``GET
{prefix}/call/{api}/{id}`` streams ``generating`` / ``complete`` / ``error`` / ``heartbeat``
events. A call that keeps nothing in its session shares one session with the others and
reads its events from the session's one stream instead (``gradio_session.py``): one request
per generation. A chain (``user`` then ``.then(bot)``) runs its first event to its end in the
same Gradio session; an answer cut at its budget is stopped with ``POST {prefix}/cancel``.
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
from proxy.upstreams.body_reads import BodyReader, ReadExpired
from proxy.upstreams.gradio_data import follow_data
from proxy.upstreams.gradio_errors import app_error
from proxy.upstreams.gradio_plan import EndpointPlan
from proxy.upstreams.gradio_session import Event, NoSessionStream, SessionCall, SessionStream
from proxy.upstreams.http import HTTPOptions, HTTPUpstream, status_error
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
    """One call at the Space: its session and event (what a cancel names), whether it
    completed, and whether a cancel was sent for it already."""

    session: str = ""
    event_id: str = ""
    completed: bool = False
    cancelled: bool = False


class CallResults:
    """A call's own result stream, ``GET {path}/{id}``: closing it cancels the call."""

    def __init__(self, queue: GradioQueue, resp: aiohttp.ClientResponse) -> None:
        self._queue = queue
        self._reader = BodyReader(resp)
        self._decoder = SSEDecoder()

    async def events(self, wait_until: float | None, deadline: float | None) -> list[Event]:
        """The output events of the stream's next chunk (maybe none); raises at its end."""
        pairs = await self._queue._output_events(self._reader, self._decoder, wait_until, deadline)
        return [(event, self._queue._parse(raw)) for event, raw in pairs]

    def release(self) -> None:
        # Back to the pool when fully read; aiohttp closes it when it is not, which is also
        # how an abandoned stream is cancelled at the Space.
        self._reader.release()


class SessionResults:
    """A call's events on its session's shared stream: leaving early cancels it at the
    Space, since the stream stays open for the session's other calls."""

    def __init__(
        self,
        queue: GradioQueue,
        stream: SessionStream,
        call: SessionCall,
        plan: EndpointPlan,
        state: CallState,
    ) -> None:
        self._queue, self._stream, self._call = queue, stream, call
        self._plan, self._state = plan, state
        self._left = False

    async def events(self, wait_until: float | None, deadline: float | None) -> list[Event]:
        try:
            return await self._call.events(wait_until)
        except ReadExpired:
            raise self._queue.expired(wait_until, deadline) from None

    def release(self) -> None:
        if not self._left:
            self.forget()
            if not self._state.completed:
                self._queue._cancel_later(self._plan, self._state)

    def forget(self) -> None:
        """Stop reading the call here, and let it go on at the Space."""
        self._left = True
        self._stream.drop(self._call)
        self._call.close()


Results = CallResults | SessionResults


class GradioQueue(HTTPUpstream):
    """The queue API's calls, for ``GradioUpstream``; the two hooks say what a call learnt."""

    def __init__(self, base_url: str, options: HTTPOptions, *, shared_session: bool = True) -> None:
        super().__init__(base_url, options)
        # The session streams by API prefix, made on first use; none when sessions are not
        # shared, or once the upstream showed it has no session stream (then each call
        # reads its own).
        self._sessions: dict[str, SessionStream] = {}
        self._no_sessions = not shared_session
        self._cancels: set[asyncio.Task[None]] = set()

    def _session_for(self, plan: EndpointPlan) -> SessionStream | None:
        if not plan.shares_session or self._no_sessions:
            return None
        stream = self._sessions.get(plan.prefix)
        if stream is None:
            stream = self._sessions[plan.prefix] = SessionStream(
                lambda path: self.session.get(self.base_url + path),
                self._translate,
                prefix=plan.prefix,
            )
        return stream

    def _cancel_later(self, plan: EndpointPlan, call: CallState) -> None:
        """Cancel ``call`` at the Space in a task of its own (its caller is leaving)."""
        task = asyncio.get_running_loop().create_task(self._stop(plan, call))
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def aclose(self) -> None:
        for stream in self._sessions.values():
            await stream.aclose()
        if self._cancels:
            await asyncio.gather(*self._cancels, return_exceptions=True)
        await super().aclose()

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

    @staticmethod
    def _parse(raw: str) -> Any:
        try:
            return orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse("the upstream sent an event that is not JSON") from None

    def _payload(self, event: str, payload: Any) -> Any:
        """An event's data, or the Space's error it carries, raised."""
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
        results = await self._own_results(plan.call_path, event_id)
        try:
            while True:
                for event, payload in await results.events(wait_until, deadline):
                    payload = self._payload(event, payload)
                    if event == "complete":
                        return payload
        finally:
            results.release()

    async def _stop(self, plan: EndpointPlan, call: CallState) -> None:
        """After an answer cut at its budget, ask the Space to stop the generation still
        running: Gradio's own ``POST {prefix}/cancel``, bounded, failures ignored."""
        fn_index = plan.answer_fn_index
        if call.completed or call.cancelled or not call.session or fn_index is None:
            return
        call.cancelled = True
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

        async def open_once() -> tuple[Results, list[Event]]:
            """Submit, open the result stream and read it to its first event: everything up
            to there may be retried, since the Space has produced nothing yet (a full queue
            or a busy GPU said in an error event included)."""
            try:
                results = await self._open(plan, data, call, first_deadline, deadline)
            except Exception as exc:
                raise before_output(self._translate(exc)) from None
            try:
                while True:
                    try:
                        found = await results.events(first_deadline, deadline)
                    except NoSessionStream:  # this upstream serves each call's own stream
                        self._no_sessions = True
                        assert isinstance(results, SessionResults)
                        results.forget()
                        results = await self._own_results(path, call.event_id)
                        continue
                    if found:
                        break  # else heartbeats and other events: no output yet
                if found[0][0] == "error":
                    call.completed = True  # over at the Space: nothing to cancel
                    self._payload(*found[0])  # raises the Space's error
                return results, found
            except Exception as exc:
                results.release()
                raise before_output(self._translate(exc)) from None
            except BaseException:  # cancelled (the client left, a deadline): release it too
                results.release()
                raise

        with self.translated():
            async with asyncio.timeout_at(deadline):
                results, first = await with_retries(
                    open_once,
                    retries=self._retries,
                    deadline=retry_deadline,
                    retry_after_max=self._retry_after_max,
                    give_up_on=self._give_up_on,
                )
            try:
                pending = first
                while True:
                    for event, payload in pending:
                        if event == "error":
                            call.completed = True  # over at the Space: nothing to cancel
                        payload = self._payload(event, payload)
                        if event == "complete":
                            # Before the yield: a caller may close us right after it.
                            self._call_completed()
                            call.completed = True
                            yield event, payload
                            return
                        yield event, payload
                    pending = await results.events(deadline, deadline)
            finally:
                results.release()

    async def _open(
        self,
        plan: EndpointPlan,
        data: list[Any],
        call: CallState,
        first_deadline: float | None,
        deadline: float | None,
    ) -> Results:
        """Submit the call and open where its events come from: its session's shared
        stream when it keeps nothing in the session, else a stream of its own."""
        stream = self._session_for(plan)
        if stream is not None:
            call.session = stream.session
            with stream.joining():
                call.event_id = await self._submit(plan.answer_path, data, call.session)
                return SessionResults(self, stream, stream.add(call.event_id), plan, call)
        # A session of our own: the state a chain keeps between its two events, and what a
        # cancel names.
        call.session = secrets.token_hex(8)
        body = data
        if plan.follow is not None:
            first = await self._run_first(
                plan, data, call.session, wait_until=first_deadline, deadline=deadline
            )
            body = follow_data(plan.follow, first)
        call.event_id = await self._submit(plan.answer_path, body, call.session)
        return await self._own_results(plan.answer_path, call.event_id)

    async def _own_results(self, path: str, event_id: str) -> CallResults:
        """An event's own result stream, ``GET {path}/{id}``, checked to be one."""
        resp = await self.session.get(f"{self.base_url}{path}/{quote(event_id, safe='')}")
        results = CallResults(self, resp)
        if resp.status != 200 or resp.content_type != "text/event-stream":
            results.release()
            if resp.status != 200:
                raise status_error(resp.status, resp.headers, f"GET {path}/<id>")
            raise UpstreamBadResponse("the upstream's result is not an event stream")
        return results
