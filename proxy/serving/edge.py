"""The connection edge: uvicorn's httptools protocol with the bounds a public server needs.

uvicorn's httptools protocol buffers a request head without limit and waits for it, and for a
body, forever. ``EdgeProtocol`` (passed to uvicorn as its ``http`` class) adds, per connection:

- a request head (request line and headers) of at most ``MAX_HEAD_BYTES`` and
  ``MAX_HEADERS`` headers, else ``431`` and close, without buffering more;
- a deadline for the head, ``HEAD_TIMEOUT`` from the connection's first byte of a request
  (or from its opening): ``408`` and close when part of a head came, close when nothing did;
- at most ``BODY_TIMEOUT`` of silence while a request body is incomplete, and at most
  ``BODY_DEADLINE`` for the whole body however it trickles (one byte just inside the silence
  bound would otherwise hold a connection for days): ``408`` and close;
- at most ``MAX_CONNECTIONS`` open connections: at the bound, the connection that has waited
  longest for its request head is closed (408) to make room, else the one longest inside an
  unfinished body, as slow clients would otherwise hold every slot; when none is waiting, the
  new connection gets ``503``;
- optionally at most ``MAX_CONNECTIONS_PER_ADDRESS`` from one client address (``503``).

A ``431`` or ``408`` is a lingering close: the write side is shut after the answer, and what
the client still sends is dropped for up to ``LINGER_SECONDS`` before the connection closes.

``server.py`` calls ``configure`` with the settings before uvicorn starts; a worker process
reads its settings when its first connection arrives.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any, ClassVar

from msgspec import Struct
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from proxy.config.settings import Settings
from proxy.serving.cycle import EdgeCycle

logger = logging.getLogger("proxy.edge")

# How long a refused connection's incoming bytes are still read (and dropped) before it
# closes, so that its answer is not lost to a reset.
LINGER_SECONDS = 2.0
# Descriptors the process needs beside client connections and the upstream pool: the
# listening socket, logs, Redis, the JWKS, the interpreter's own files.
SPARE_FILES = 64


def fitted_connections(max_connections: int, upstream_pool: int) -> int:
    """``max_connections``, once the open-file limit holds it, the upstream pool and a
    margin: the soft limit is raised to that when the hard one allows, else the bound is
    lowered to what fits, with a warning (beyond the limit a new client would get no
    answer at all, not a 503)."""
    needed = max_connections + upstream_pool + SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return max_connections
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    except (ValueError, OSError):
        pass
    if soft >= needed:
        logger.info("raised the open-file limit to %d for MAX_CONNECTIONS", soft)
        return max_connections
    room = soft - SPARE_FILES
    fitted = max(1, room - min(upstream_pool, room // 2))
    logger.warning(
        "the open-file limit is %d: MAX_CONNECTIONS=%d with %d upstream connections does "
        "not fit; serving at most %d client connections (raise the limit, ulimit -n, to "
        "keep %d)",
        soft,
        max_connections,
        upstream_pool,
        fitted,
        max_connections,
    )
    return fitted


class EdgeLimits(Struct, frozen=True):
    """The settings' bounds (their defaults live in config/variables.py)."""

    max_head_bytes: int
    max_headers: int
    head_timeout: float
    body_timeout: float
    max_connections: int
    body_deadline: float = 30.0
    max_connections_per_address: int = 0

    @classmethod
    def of(cls, settings: Settings) -> EdgeLimits:
        return cls(
            max_head_bytes=settings.max_head_bytes,
            max_headers=settings.max_headers,
            head_timeout=settings.head_timeout,
            body_timeout=settings.body_timeout,
            max_connections=fitted_connections(
                settings.max_connections, settings.upstream_max_connections
            ),
            body_deadline=settings.body_deadline,
            max_connections_per_address=settings.max_connections_per_address,
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
    """uvicorn's httptools protocol, bounded; see the module docstring.

    Per request it only counts head bytes and notes times; no timer is armed per request. One
    sweep per process, a few times a second while connections are open, closes those past a
    deadline (so a deadline is kept within a quarter of itself, at most a second late).
    """

    sweeping: ClassVar[bool] = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits()
        self.head_started = time.monotonic()
        self.body_active_at = 0.0
        self.body_started = 0.0
        self.in_head = True  # waiting for (the rest of) a request head
        self.head_bytes = 0
        self.too_many_headers = False
        self.lingering = False  # refused: what still comes is dropped until the close

    # Connections

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Refused at once, without lingering: a slot is what is short.
        if len(self.connections) > self.limits.max_connections and not self._make_room():
            self._refuse(TOO_MANY_CONNECTIONS, linger=False)
            return
        if self.limits.max_connections_per_address and self._from_same_address() > (
            self.limits.max_connections_per_address
        ):
            self._refuse(TOO_MANY_CONNECTIONS, linger=False)
            return
        if not EdgeProtocol.sweeping:
            EdgeProtocol.sweeping = True
            self.loop.call_later(self._sweep_interval(), self._sweep)

    def _from_same_address(self) -> int:
        """The open connections from this one's client address, itself included."""
        host = self.client[0] if self.client else None
        return sum(
            1
            for c in self.connections
            if isinstance(c, EdgeProtocol)
            and c.client
            and c.client[0] == host
            and not c.transport.is_closing()
        )

    def _sweep_interval(self) -> float:
        limits = self.limits
        return min(1.0, limits.head_timeout / 4, limits.body_timeout / 4, limits.body_deadline / 4)

    def _sweep(self) -> None:
        """Close every connection of this process that is past its deadline."""
        now = time.monotonic()
        edges = [c for c in self.connections if isinstance(c, EdgeProtocol)]
        for connection in edges:
            connection._check(now)
        if edges:
            self.loop.call_later(self._sweep_interval(), self._sweep)
        else:
            EdgeProtocol.sweeping = False

    def _check(self, now: float) -> None:
        if self.transport.is_closing():
            return
        if self.in_head and self._waiting_for_head():
            if now - self.head_started > self.limits.head_timeout:
                self._head_expired()
        elif self._in_body():
            silent = now - self.body_active_at > self.limits.body_timeout
            if silent or now - self.body_started > self.limits.body_deadline:
                self._body_expired()

    def _in_body(self) -> bool:
        """Inside a request whose body has not all arrived."""
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not self.pipeline and not self.in_head

    def _waiting_for_head(self) -> bool:
        """Between requests: a head not (fully) arrived, or a kept-alive connection."""
        cycle = self.cycle
        return cycle is None or (cycle.response_complete and (self.in_head or not cycle.more_body))

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request head, else the one
        longest inside an unfinished body; False if there is neither."""
        others = [
            c
            for c in self.connections
            if isinstance(c, EdgeProtocol) and c is not self and not c.transport.is_closing()
        ]
        waiting = [c for c in others if c._waiting_for_head()]
        if not waiting:
            in_body = [c for c in others if c._in_body()]
            if not in_body:
                return False
            min(in_body, key=lambda c: c.body_started)._body_expired()
            return True
        oldest = min(waiting, key=lambda c: c.head_started)
        if oldest.in_head:
            oldest._head_expired()
        else:  # kept alive between requests
            oldest.transport.close()
        return True

    def _refuse(self, reply: bytes, *, linger: bool = True) -> None:
        """Answer ``reply`` and close. With ``linger``, the write side is shut first and
        what the client still sends is read and dropped for up to ``LINGER_SECONDS`` (as
        nginx's lingering close): closing with its bytes unread would reset the connection,
        and a client still sending (an oversized head) would lose the answer."""
        transport = self.transport
        if self.lingering:  # refused already: now it goes
            transport.close()
            return
        if transport.is_closing():
            return
        transport.write(reply)
        if not linger or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.lingering = True
        self.loop.call_later(LINGER_SECONDS, transport.close)

    def _head_expired(self) -> None:
        if self.head_bytes:
            self._refuse(HEAD_TIMEOUT)
        else:
            self.transport.close()  # nothing came: nobody to answer

    def _body_expired(self) -> None:
        cycle = self.cycle
        # The app's receive() now returns http.disconnect and its answer goes nowhere.
        started = cycle.response_started
        cycle.disconnected = True
        cycle.message_event.set()
        if started:
            self.transport.close()
        else:
            self._refuse(BODY_TIMEOUT)

    # Parsing

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        if not self.in_head:
            if self.cycle.more_body:  # the body of the current request
                self.body_active_at = time.monotonic()
                super().data_received(data)
                return
            # The message is complete: this is the next request's head.
            self.in_head = True
            self.head_bytes = 0
            self.head_started = time.monotonic()
        room = self.limits.max_head_bytes - self.head_bytes
        self.head_bytes += len(data)
        if len(data) <= room:
            super().data_received(data)
            return
        # Only what fits the limit is parsed, and the rest only if the head ended within it.
        super().data_received(data[:room])
        if self.transport.is_closing() or self.lingering:
            return
        if self.in_head:
            self._refuse(HEAD_TOO_LARGE)
            return
        super().data_received(data[room:])

    def on_headers_complete(self) -> None:
        if len(self.headers) > self.limits.max_headers:
            self.too_many_headers = True
            raise ValueError("too many headers")  # stops the parser: send_400_response
        self.in_head = False
        self.body_active_at = self.body_started = time.monotonic()
        super().on_headers_complete()
        cycle = self.cycle
        if type(cycle) is RequestResponseCycle:
            # uvicorn builds its own cycle class by name; its task looks up ``send`` only
            # when it first runs, so the cycle becomes one that writes in fewer steps.
            cycle.__class__ = EdgeCycle
            cycle.loop = self.loop  # type: ignore[attr-defined]

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers a parser error with 400; a head refused above is a 431.
        if self.too_many_headers:
            self._refuse(HEAD_TOO_LARGE)
        else:
            super().send_400_response(msg)
