"""The connection edge: uvicorn's httptools protocol with the bounds a public server needs.

uvicorn's httptools protocol buffers a request head without limit and waits for it, and for a
body, forever. ``EdgeProtocol`` (passed to uvicorn as its ``http`` class) adds, per connection:

- a request head (request line and headers) of at most ``MAX_HEAD_BYTES`` and
  ``MAX_HEADERS`` headers, else ``431`` and close, without buffering more;
- a deadline for the head, ``HEAD_TIMEOUT`` from the connection's first byte of a request
  (or from its opening): ``408`` and close when part of a head came, close when nothing did;
- at most ``BODY_TIMEOUT`` of silence while a request body is incomplete: ``408`` and close;
- at most ``MAX_CONNECTIONS`` open connections: at the bound, the connection that has waited
  longest for its request head is closed (408) to make room, as a slow-loris client would
  otherwise hold every slot; when none is waiting, the new connection gets ``503``.

``serving.py`` calls ``configure`` with the settings before uvicorn starts; a worker process
reads its settings when its first connection arrives.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.settings import Settings


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_head_bytes: int = 32 * 1024
    max_headers: int = 100
    head_timeout: float = 60.0
    body_timeout: float = 60.0
    max_connections: int = 1000

    @classmethod
    def of(cls, settings: Settings) -> EdgeLimits:
        return cls(
            max_head_bytes=settings.max_head_bytes,
            max_headers=settings.max_headers,
            head_timeout=settings.head_timeout,
            body_timeout=settings.body_timeout,
            max_connections=settings.max_connections,
        )


_limits: EdgeLimits | None = None


def configure(settings: Settings) -> None:
    """Use ``settings``' limits for every connection this process accepts from now on."""
    global _limits
    _limits = EdgeLimits.of(settings)


def limits() -> EdgeLimits:
    if _limits is None:  # a worker process: the environment it inherited
        configure(Settings())
    assert _limits is not None
    return _limits


def _reply(status: bytes, message: bytes) -> bytes:
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: "
        + str(len(message)).encode()
        + b"\r\nconnection: close\r\n\r\n"
        + message
    )


HEAD_TOO_LARGE = _reply(
    b"431 Request Header Fields Too Large",
    b'{"error": "the request line and headers are too large or too many",'
    b' "code": "headers_too_large"}',
)
HEAD_TIMEOUT = _reply(
    b"408 Request Timeout",
    b'{"error": "the request did not arrive in time", "code": "request_timeout"}',
)
BODY_TIMEOUT = _reply(
    b"408 Request Timeout",
    b'{"error": "the request body stopped arriving", "code": "request_timeout"}',
)
TOO_MANY_CONNECTIONS = _reply(
    b"503 Service Unavailable",
    b'{"error": "the gateway has too many open connections; retry shortly",'
    b' "code": "too_many_connections"}',
)


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounded; see the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits()
        self.opened_at = time.monotonic()
        self.in_head = True  # waiting for (the rest of) a request head
        self.head_bytes = 0
        self.header_count = 0
        self.too_large = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self._refuse(TOO_MANY_CONNECTIONS)
            return
        self._arm(self.limits.head_timeout, self._head_expired)

    def _waiting_for_head(self) -> bool:
        idle = self.cycle is None or self.cycle.response_complete
        return self.in_head and idle and not self.transport.is_closing()

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request head; False if none."""
        waiting = [
            c
            for c in self.connections
            if isinstance(c, EdgeProtocol) and c is not self and c._waiting_for_head()
        ]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.opened_at)
        if oldest.head_bytes:
            oldest._refuse(HEAD_TIMEOUT)
        else:
            oldest._disarm()
            oldest.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self.timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _refuse(self, reply: bytes) -> None:
        self._disarm()
        if not self.transport.is_closing():
            self.transport.write(reply)
            self.transport.close()

    def _head_expired(self) -> None:
        self.timer = None
        if self.head_bytes:
            self._refuse(HEAD_TIMEOUT)
        elif not self.transport.is_closing():
            self.transport.close()  # nothing came: nobody to answer

    def _body_expired(self) -> None:
        self.timer = None
        cycle = self.cycle
        if cycle is not None:
            # The app's receive() now returns http.disconnect and its answer goes nowhere.
            started = cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
            if not started:
                self._refuse(BODY_TIMEOUT)
                return
        if not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers a parser error with 400; a head refused by on_header is a 431.
        if self.too_large:
            self._refuse(HEAD_TOO_LARGE)
        else:
            super().send_400_response(msg)

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if not self.in_head and cycle is not None and cycle.more_body:
            if self.timer is not None:  # the body's silence deadline starts again
                self._arm(self.limits.body_timeout, self._body_expired)
            super().data_received(data)
            return
        if not self.in_head:  # the message is complete: this is the next request's head
            self.in_head = True
            self.head_bytes = 0
        room = self.limits.max_head_bytes - self.head_bytes
        self.head_bytes += len(data)
        if len(data) <= room:
            super().data_received(data)
            return
        # Only what fits the limit is parsed, and the rest only if the head ended within it.
        super().data_received(data[:room])
        if self.transport.is_closing():
            return
        if self.in_head:
            self._refuse(HEAD_TOO_LARGE)
            return
        super().data_received(data[room:])

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_count = 0
        if self.timer is None:
            self._arm(self.limits.head_timeout, self._head_expired)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > self.limits.max_headers:
            self.too_large = True
            raise ValueError("too many headers")  # stops the parser: send_400_response
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._disarm()
        super().on_headers_complete()
        # A queued (pipelined) request cannot send its body yet: no deadline for it.
        if self.cycle is not None and self.cycle.more_body and not self.pipeline:
            self._arm(self.limits.body_timeout, self._body_expired)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if not self.in_head:
            self._disarm()

    def on_response_complete(self) -> None:
        waiting = not self.pipeline  # else the next request is parsed and starts now
        super().on_response_complete()
        # The next request's head has its deadline from now (the keep-alive timer runs too).
        if waiting and not self.transport.is_closing():
            self.head_bytes = 0
            self._arm(self.limits.head_timeout, self._head_expired)
