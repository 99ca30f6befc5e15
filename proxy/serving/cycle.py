"""A response written as uvicorn writes it, in fewer steps.

uvicorn's ``RequestResponseCycle.send`` checks each response header with two regular
expressions in a Python loop, and writes a response's head and its body in two writes (two
``send`` calls to the kernel). ``EdgeCycle`` checks every header name with one search over
the names and every value with one over the values (the same expressions: joining adds no
character either refuses), builds the head with joins, and keeps a head with a
``Content-Length`` until the first body message: a whole body written with its head in one
write. Everything else (a chunked or streamed body, ``HEAD``, a ``Connection`` or
``Transfer-Encoding`` header from the app, upper-case or refused names, uvicorn's own access
log, a paused transport) is uvicorn's code, unchanged, so the bytes on the wire are the same.
"""

from __future__ import annotations

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)

# Headers whose meaning uvicorn acts on beside Content-Length: left to its own code.
_FRAMING = frozenset({b"transfer-encoding", b"connection"})


class EdgeCycle(RequestResponseCycle):
    """uvicorn's cycle with the head of a sized response written together with its body."""

    head: bytes | None = None  # a head not written yet: it goes with the first body

    async def send(self, message: ASGISendEvent) -> None:
        if self.response_started:
            head = self.head
            if head is None:
                await super().send(message)
                return
            self.head = None
            if (
                message["type"] == "http.response.body"
                and not message.get("more_body", False)
                and not self.disconnected
                and not self.flow.write_paused
                and len(body := message.get("body", b"")) == self.expected_content_length
                and self.scope["method"] != "HEAD"
            ):
                self.transport.write(head + body)
                self.expected_content_length = 0
                self.response_complete = True
                self.message_event.set()
                if not self.keep_alive:
                    self.transport.close()
                self.on_response()
                return
            if not self.disconnected:
                self.transport.write(head)
            await super().send(message)
            return
        if not self._start(message):
            await super().send(message)

    def _start(self, message: ASGISendEvent) -> bool:
        """Take a response start with a ``Content-Length`` and nothing unusual: False leaves
        it to uvicorn."""
        if (
            message["type"] != "http.response.start"
            or self.access_log
            or self.disconnected
            or self.flow.write_paused
        ):
            return False
        headers = [*self.default_headers, *message.get("headers", ())]
        length = None
        for name, value in headers:
            if name == b"content-length" and length is None:
                length = value
            elif name in _FRAMING or name == b"content-length":
                return False
        if length is None:
            return False
        names = b"".join([name for name, _ in headers])
        if not names.islower() or HEADER_RE.search(names):
            return False
        if HEADER_VALUE_RE.search(b"\t".join([value for _, value in headers])):
            return False  # uvicorn refuses it
        expected = int(length)
        end = b"\r\n\r\n" if self.keep_alive else b"\r\nconnection: close\r\n\r\n"
        self.head = b"".join(
            (STATUS_LINE[message["status"]], b"\r\n".join(map(b": ".join, headers)), end)
        )
        self.response_started = True
        self.waiting_for_100_continue = False
        self.chunked_encoding = False
        self.expected_content_length = expected
        return True
