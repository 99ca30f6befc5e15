"""Many calls of one Gradio session read from one event stream, as Gradio's own clients do.

A call submitted with a session's hash (``POST {prefix}/call/{api}`` with ``session_hash``)
has its messages on that session's stream, ``GET {prefix}/queue/data?session_hash=...``, each
naming its event id. ``SessionStream`` reads that stream once for every call of the session
and hands each call its own, in the call API's names (``generating``, ``complete``, ``error``),
so that a generation costs the Space one request instead of two.

Only calls that keep nothing in the session share one (a Space keeps ``gr.State`` per
session: ``EndpointPlan.shares_session``). Gradio ends the stream when the session has
nothing pending; it is opened again while a call still waits. A stream that breaks fails
every call it carried, as a broken result stream fails its one call; a call that leaves
early is stopped at the Space with ``POST {prefix}/cancel``, since its stream stays open for
the others.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import Any

import orjson

from proxy.errors import GatewayError, UpstreamBadResponse, UpstreamDisconnected
from proxy.upstreams.body_reads import BodyReader, ReadExpired
from proxy.upstreams.http import status_error
from proxy.upstreams.sse import SSEDecoder

logger = logging.getLogger("proxy.upstream.gradio")

Event = tuple[str, Any]  # a call API event's name and its parsed data
# A stream that ends with calls still waiting and nothing for them is opened again at most
# this many times in a row before those calls fail.
EMPTY_OPENS = 3
# Messages for an event id no call has claimed yet (its submit's answer is still on the way)
# are kept for at most this many ids.
EARLY_IDS = 1024


class NoSessionStream(Exception):
    """The upstream has no ``queue/data`` route (404 or 405): it serves calls one by one."""


class SessionCall:
    """One call's events as they come from the session's stream, or the stream's failure.

    A wait for events is bounded by one timer per call, set again only when the bound changes
    (a stream's first-token deadline, then its total one), not one per wait: a stream waits
    once per chunk. ``close`` cancels it when the call ends."""

    __slots__ = ("event_id", "_loop", "_events", "_failure", "_waiter", "_timer", "_timer_at")

    def __init__(self, event_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.event_id = event_id
        # Its stream's loop, known once: asking for the running loop costs a system call
        # (getpid) on Python 3.11, and a call waits once per chunk.
        self._loop = loop
        self._events: list[Event] = []
        self._failure: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        # The bound the timer is set for; with no timer left, that bound has passed.
        self._timer_at: float | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def put(self, event: Event) -> None:
        self._events.append(event)
        self._wake()

    def fail(self, error: BaseException) -> None:
        """End the call with ``error`` once its events are read (one error for every call of
        a stream, as a flight's listeners share theirs)."""
        if self._failure is None:
            self._failure = error
            self._wake()

    async def events(self, wait_until: float | None) -> list[Event]:
        """The events received since the last read, waiting until ``wait_until`` (loop time;
        None: unbounded here) for one; raises ReadExpired past it, or the stream's failure."""
        while not self._events:
            if self._failure is not None:
                raise self._failure
            if wait_until is not None and wait_until == self._timer_at and self._timer is None:
                raise ReadExpired(wait_until)  # its timer fired while no one waited
            loop = self._loop
            if wait_until != self._timer_at:
                self._bound(loop, wait_until)
            waiter = self._waiter = loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        events, self._events = self._events, []
        return events

    def _bound(self, loop: asyncio.AbstractEventLoop, when: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = None if when is None else loop.call_at(when, self._expire, when)

    def _expire(self, when: float) -> None:
        self._timer = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(ReadExpired(when))

    def close(self) -> None:
        """The call ended: its timer goes (it would keep the call until its deadline)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def call_event(message: dict[str, Any]) -> Event | None:
    """A ``queue/data`` message as the call API names it (what ``GET {prefix}/call/{api}/{id}``
    would have sent), or None for one it leaves out (estimation, process_starts, logs)."""
    kind = message.get("msg")
    if kind not in ("process_generating", "process_completed"):
        return None
    output = message.get("output")
    output = output if isinstance(output, dict) else {}
    if not message.get("success", True):
        return "error", output
    return ("generating" if kind == "process_generating" else "complete"), output.get("data")


class SessionStream:
    """One session's ``queue/data`` stream, read in a task of its own while calls wait."""

    def __init__(
        self,
        open_stream: Callable[[str], Any],
        translate: Callable[[Exception], GatewayError],
        *,
        prefix: str,
    ) -> None:
        self.session = secrets.token_hex(8)
        self.path = f"{prefix}/queue/data?session_hash={self.session}"
        self._what = f"GET {prefix}/queue/data"
        self._open = open_stream
        self._translate = translate
        self._calls: dict[str, SessionCall] = {}
        self._early: dict[str, list[Event]] = {}
        self._joining = 0
        self._delivered = 0  # events handed to calls, to tell a stream that brought nothing
        self._task: asyncio.Task[None] | None = None

    def joining(self) -> _Joining:
        """Around a submit: messages for ids not claimed yet are kept meanwhile."""
        return _Joining(self)

    def add(self, event_id: str) -> SessionCall:
        """The call for ``event_id``, given what already came for it; reads the stream."""
        loop = asyncio.get_running_loop()
        call = SessionCall(event_id, loop)
        early = self._early.pop(event_id, None)
        if early:
            call._events.extend(early)
        self._calls[event_id] = call
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return call

    def drop(self, call: SessionCall) -> None:
        if self._calls.get(call.event_id) is call:
            del self._calls[call.event_id]

    def _fail_all(self, error: BaseException) -> None:
        for call in self._calls.values():
            call.fail(error)
        self._calls.clear()
        self._early.clear()

    def _dispatch(self, message: Any) -> bool:
        """Hand one message to its call; True when it closes the stream."""
        if not isinstance(message, dict):
            return False
        kind = message.get("msg")
        if kind == "close_stream":
            return True
        if kind == "unexpected_error":  # the session's stream failed: every call with it
            text = message.get("message")
            for each in self._calls.values():
                each.put(("error", text))
            return False
        event = call_event(message)
        event_id = message.get("event_id")
        if event is None or not isinstance(event_id, str):
            return False
        call = self._calls.get(event_id)
        if call is not None:
            call.put(event)
            self._delivered += 1
            if kind == "process_completed":  # its last message: nothing more to wait for
                del self._calls[event_id]
        elif self._joining and (event_id in self._early or len(self._early) < EARLY_IDS):
            self._early.setdefault(event_id, []).append(event)
        return False

    async def _run(self) -> None:
        empty = 0
        try:
            while self._calls:
                delivered = self._delivered
                if not await self._read_once():
                    raise UpstreamDisconnected(
                        "the upstream closed the result stream before completing"
                    )
                # Closed with calls still waiting: open it again for them, unless it keeps
                # closing with nothing for them (the Space forgot them).
                empty = empty + 1 if self._delivered == delivered else 0
                if empty >= EMPTY_OPENS:
                    raise UpstreamDisconnected("the upstream's session stream has no result")
        except NoSessionStream as exc:
            self._fail_all(exc)
        except Exception as exc:
            self._fail_all(exc if isinstance(exc, GatewayError) else self._translate(exc))
        except asyncio.CancelledError:
            self._fail_all(UpstreamDisconnected("the gateway closed the upstream's session stream"))
            raise

    async def _read_once(self) -> bool:
        """Read the stream until it ends; True when it closed itself (``close_stream``)."""
        resp = await self._open(self.path)
        reader = BodyReader(resp)
        try:
            if resp.status in (404, 405):
                raise NoSessionStream
            if resp.status != 200:
                raise status_error(resp.status, resp.headers, self._what)
            if resp.content_type != "text/event-stream":
                raise UpstreamBadResponse("the upstream's session stream is not an event stream")
            decoder = SSEDecoder()
            while chunk := await reader.read(None):
                for _, raw in decoder.feed(chunk):
                    try:
                        message = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        raise UpstreamBadResponse(
                            "the upstream sent an event that is not JSON"
                        ) from None
                    if self._dispatch(message):
                        return True
            return False
        finally:
            reader.release()

    async def aclose(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class _Joining:
    __slots__ = ("_stream",)

    def __init__(self, stream: SessionStream) -> None:
        self._stream = stream

    def __enter__(self) -> None:
        self._stream._joining += 1

    def __exit__(self, *exc: object) -> None:
        stream = self._stream
        stream._joining -= 1
        if not stream._joining:
            stream._early.clear()
