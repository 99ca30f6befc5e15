"""Identical streams in flight share one generation, fanned out to every listener.

A flight runs its source (the upstream's stream, or another instance's followed through
Redis) in a task of its own, so no listener's departure cuts it short while others listen.
Each listener gets what a lone client would have got: a late one first receives the text so
far as one chunk, then the live chunks, then the same end (its last chunk, or the same
error). When the last listener leaves before the end, the task is cancelled at once, and with
it the upstream call. JSON requests listen too, for the whole text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable

from msgspec import Struct, field

from proxy.core.generation import Chunk, FinishReason, Usage
from proxy.errors import GatewayError, UpstreamDisconnected
from proxy.observe.record import RequestRecord, current_record

logger = logging.getLogger("proxy.gateway")

# While no listener is left here, how often a flight asks whether another instance follows it.
WATCH_INTERVAL = 0.5


class Outcome(Struct):
    """How a flight ended: its text and finish reason, or the error every listener gets."""

    text: str = ""
    finish: FinishReason = "stop"
    usage: Usage | None = None
    error: BaseException | None = None


class StreamFlight(Struct, eq=False):
    """One generation in flight and the listeners it serves."""

    key: str
    chunks: list[Chunk] = field(default_factory=list)
    text: str = ""
    finish: FinishReason = "stop"
    usage: Usage | None = None
    error: BaseException | None = None
    done: bool = False
    listeners: int = 0
    # The record of the request that started the flight: which upstreams served it and what
    # the endpoint ignored, copied to every listener's own record.
    origin: RequestRecord | None = None
    # Set when other instances may follow the flight: whether any still does.
    followed_elsewhere: Callable[[], Awaitable[bool]] | None = None
    # Set by the source when it follows another instance's flight instead of generating.
    remote: bool = False
    # One future per waiting listener, resolved at the next chunk or the end. Not an
    # ``asyncio.Event`` made again per chunk: a new Event takes a lock on its first wait.
    _waiters: list[asyncio.Future[None]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    # The loop it runs in, known once: asking for the running loop costs a system call
    # (getpid) on Python 3.11, and a listener waits once per chunk.
    _loop: asyncio.AbstractEventLoop | None = None
    _watcher: asyncio.Task[None] | None = None
    _on_end: Callable[[StreamFlight], None] | None = None

    def _notify(self) -> None:
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def _changed(self) -> None:
        """Until the next chunk or the end. A listener cancelled meanwhile cancels its own
        future with it (the task cancels what it waits on), which ``_notify`` passes over."""
        waiter = (self._loop or asyncio.get_running_loop()).create_future()
        self._waiters.append(waiter)
        await waiter

    def start(self, source: AsyncGenerator[Chunk, None]) -> None:
        """Run ``source`` in a task of the flight's own (once)."""
        if self._task is None:
            self.origin = current_record()
            self._loop = loop = asyncio.get_running_loop()
            self._task = loop.create_task(self._run(source))

    async def _run(self, source: AsyncGenerator[Chunk, None]) -> None:
        try:
            async for chunk in source:
                self.chunks.append(chunk)
                self.text = chunk.text if chunk.replace else self.text + chunk.text
                self.finish = chunk.finish_reason or self.finish
                self.usage = chunk.usage or self.usage
                self._notify()
        except asyncio.CancelledError:
            self.error = UpstreamDisconnected("the generation was stopped before it completed")
            raise
        except BaseException as exc:  # every listener gets it
            if not isinstance(exc, GatewayError):
                logger.error("a stream in flight failed", exc_info=exc)
            self.error = exc
        finally:
            await source.aclose()
            self.done = True
            self._notify()
            if self._on_end is not None:
                self._on_end(self)

    def _left(self) -> None:
        self.listeners -= 1
        if self.listeners or self.done or self._task is None:
            return
        if self.followed_elsewhere is None:
            self.stop()
        elif self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        """With no listener here, go on while another instance follows; stop when none does
        (or when that cannot be known)."""
        assert self.followed_elsewhere is not None
        while self.listeners == 0 and not self.done:
            try:
                wanted = await self.followed_elsewhere()
            except Exception:
                wanted = False
            if not wanted:
                if self.listeners == 0:
                    self.stop()
                return
            await asyncio.sleep(WATCH_INTERVAL)

    def stop(self) -> None:
        """Cancel the generation (nobody listens any more) and let no new listener join."""
        if self._task is not None and not self.done:
            self._task.cancel()
        if self._on_end is not None:
            self._on_end(self)

    async def wait_stopped(self) -> None:
        for task in (self._task, self._watcher):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)

    def _share_record(self, record: RequestRecord | None) -> None:
        origin = self.origin
        if record is None or origin is None or record is origin:
            return
        if origin.upstreams:
            record.upstreams = list(origin.upstreams)
        if origin.ignored:
            record.ignored = origin.ignored
        if origin.model:
            record.model = origin.model

    async def listen(self) -> AsyncGenerator[Chunk, None]:
        """The flight's chunks as a lone client would have got them: first the text so far
        in one chunk, then each new chunk; the flight's error at its end, if it failed."""
        self.listeners += 1
        record = current_record()
        try:
            index = len(self.chunks)
            if index:
                self._share_record(record)
                yield Chunk(self.text, finish_reason=self.finish if self.done else None)
            while True:
                while index < len(self.chunks):
                    chunk = self.chunks[index]
                    index += 1
                    if index == 1:
                        self._share_record(record)
                    yield chunk
                if self.done:
                    break
                await self._changed()
            self._share_record(record)
            if self.error is not None:
                raise rebuilt(self.error)
        finally:
            self._left()

    async def outcome(self) -> Outcome:
        """The whole text once the flight ends (a JSON request's way to join it)."""
        self.listeners += 1
        try:
            while not self.done:
                await self._changed()
            self._share_record(current_record())
            return Outcome(self.text, self.finish, self.usage, self.error)
        finally:
            self._left()


class StreamFlights:
    """The flights of one process, by cache key."""

    def __init__(self) -> None:
        self._running: dict[str, StreamFlight] = {}

    def __len__(self) -> int:
        return len(self._running)

    def get(self, key: str) -> StreamFlight | None:
        return self._running.get(key)

    def begin(self, key: str, source: AsyncGenerator[Chunk, None]) -> StreamFlight:
        """A new flight for ``key``, running ``source``; listen to it to be served."""
        flight = StreamFlight(key, _on_end=self._ended)
        self._running[key] = flight
        flight.start(source)
        return flight

    def _ended(self, flight: StreamFlight) -> None:
        if self._running.get(flight.key) is flight:
            del self._running[flight.key]

    async def aclose(self) -> None:
        """Stop every flight (the gateway shuts down) and wait for them."""
        flights = list(self._running.values())
        for flight in flights:
            flight.stop()
        for flight in flights:
            await flight.wait_stopped()


def rebuilt(error: BaseException) -> BaseException:
    """``error`` as one listener raises it: a GatewayError as it is (its status and code
    render the same for everyone), anything else logged once and generic."""
    if isinstance(error, GatewayError):
        return error
    return GatewayError("internal error")
