"""A response written as uvicorn writes it, in fewer steps.

uvicorn's ``RequestResponseCycle.send`` checks each response header with two regular
expressions in a Python loop, and writes a response's head and its body in two writes (two
``send`` calls to the kernel). ``EdgeCycle`` checks all the names in one pass and all the
values in another (deleting the bytes uvicorn's expressions allow must leave nothing),
builds the head with joins, and keeps the head until the first body message: a whole body
written with its head in one write. A streamed (chunked) head waits only until the end of the
event-loop turn it was sent in: a stream whose first frame is ready (the generation routes
send their head once it is) leaves with its head in one write, and any other stream's head
goes out as soon as the turn ends, before its first frame is known. Everything else (``HEAD``
without a length, ``Connection`` or ``Transfer-Encoding`` from the app, upper-case or
refused names, uvicorn's own access log, a paused transport) is uvicorn's code, unchanged,
so the bytes on the wire are the same.
"""

from __future__ import annotations

import asyncio

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)

# Headers whose meaning uvicorn acts on beside Content-Length: left to its own code.
_FRAMING = frozenset({b"transfer-encoding", b"connection"})
# The bytes uvicorn's expressions let through (names: lower-case too, as it writes them):
# a name or value is one of uvicorn's exactly when deleting these leaves nothing.
_BYTES = [bytes([c]) for c in range(256)]
_NAME_BYTES = b"".join(b for b in _BYTES if not HEADER_RE.search(b) and not b.isupper())
_VALUE_BYTES = b"".join(b for b in _BYTES if not HEADER_VALUE_RE.search(b))


class EdgeCycle(RequestResponseCycle):
    """uvicorn's cycle with a response's head written together with its first body."""

    head: bytes | None = None  # a head not written yet: it goes with the first body
    streamed = False  # a chunked body whose head this cycle built: its chunks are framed here
    # The connection's loop, given by its protocol: asking for the running loop costs a
    # system call (getpid) on Python 3.11.
    loop: asyncio.AbstractEventLoop | None = None

    async def send(self, message: ASGISendEvent) -> None:
        if self.response_started:
            head = self.head
            if head is None:
                if (
                    self.streamed
                    and message["type"] == "http.response.body"
                    and not self.response_complete
                    and not self.disconnected
                    and not self.flow.write_paused
                ):
                    more = message.get("more_body", False)
                    self.transport.write(_chunk(message.get("body", b""), more))
                    if not more:
                        self._complete()
                    return
                await super().send(message)
                return
            self.head = None
            if (
                message["type"] == "http.response.body"
                and not self.disconnected
                and not self.flow.write_paused
            ):
                body = message.get("body", b"")
                more = message.get("more_body", False)
                if self.streamed:
                    self.transport.write(head + _chunk(body, more))
                    if not more:
                        self._complete()
                    return
                if (
                    not more
                    and len(body) == self.expected_content_length
                    and self.scope["method"] != "HEAD"
                ):
                    self.transport.write(head + body)
                    self.expected_content_length = 0
                    self._complete()
                    return
            if not self.disconnected:
                self.transport.write(head)
            await super().send(message)
            return
        if not self._start(message):
            await super().send(message)

    def _complete(self) -> None:
        """The response was written whole: as uvicorn ends one."""
        self.response_complete = True
        self.message_event.set()
        if not self.keep_alive:
            self.transport.close()
        self.on_response()

    def _flush_head(self) -> None:
        """A streamed head still held at the end of its turn: written now."""
        head = self.head
        if head is not None:
            self.head = None
            if not self.disconnected:
                self.transport.write(head)

    def _start(self, message: ASGISendEvent) -> bool:
        """Take a response start with a ``Content-Length``, or a streamed one, and nothing
        unusual: False leaves it to uvicorn."""
        if (
            message["type"] != "http.response.start"
            or self.access_log
            or self.disconnected
            or self.flow.write_paused
        ):
            return False
        headers = [*self.default_headers, *message.get("headers", ())]
        names = [name for name, _ in headers]
        lengths = names.count(b"content-length")
        if lengths > 1 or not _FRAMING.isdisjoint(names):
            return False  # two lengths, or framing uvicorn decides
        status = message["status"]
        streamed = not lengths
        if streamed and (self.scope["method"] == "HEAD" or status in (204, 304)):
            return False  # no body and no length: uvicorn's
        if b"".join(names).translate(None, _NAME_BYTES):
            return False  # upper case, which uvicorn lowers, or a name it refuses
        values = [value for _, value in headers]
        if b"".join(values).translate(None, _VALUE_BYTES):
            return False  # uvicorn refuses it
        lines = [STATUS_LINE[status], *[name + b": " + value + b"\r\n" for name, value in headers]]
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        if streamed:
            lines.append(b"transfer-encoding: chunked\r\n")
        lines.append(b"\r\n")
        self.head = b"".join(lines)
        self.response_started = True
        self.waiting_for_100_continue = False
        if streamed:
            self.streamed = self.chunked_encoding = True
            self.expected_content_length = 0
            (self.loop or asyncio.get_running_loop()).call_soon(self._flush_head)
        else:
            self.chunked_encoding = False
            self.expected_content_length = int(values[names.index(b"content-length")])
        return True


def _chunk(body: bytes, more: bool) -> bytes:
    """``body`` as uvicorn frames a chunk, with the body's end when nothing more comes."""
    framed = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
    return framed if more else framed + b"0\r\n\r\n"
