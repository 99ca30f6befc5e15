"""A response written as uvicorn writes it, in fewer steps.

uvicorn's ``RequestResponseCycle.send`` checks each response header with two regular
expressions in a Python loop, and writes a response's head and its body in two writes (two
``send`` calls to the kernel). ``EdgeCycle`` checks all the names in one pass and all the
values in another (deleting the bytes uvicorn's expressions allow must leave nothing),
builds the head with joins, and keeps a head with a ``Content-Length`` until the first body
message: a whole body written with its head in one write. Everything else (a chunked or
streamed body, ``HEAD``, a ``Connection`` or ``Transfer-Encoding`` header from the app,
upper-case or refused names, uvicorn's own access log, a paused transport) is uvicorn's code,
unchanged, so the bytes on the wire are the same.
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
# The bytes uvicorn's expressions let through (names: lower-case too, as it writes them):
# a name or value is one of uvicorn's exactly when deleting these leaves nothing.
_BYTES = [bytes([c]) for c in range(256)]
_NAME_BYTES = b"".join(b for b in _BYTES if not HEADER_RE.search(b) and not b.isupper())
_VALUE_BYTES = b"".join(b for b in _BYTES if not HEADER_VALUE_RE.search(b))


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
        names = [name for name, _ in headers]
        if names.count(b"content-length") != 1 or not _FRAMING.isdisjoint(names):
            return False  # no length, two, or framing uvicorn decides
        if b"".join(names).translate(None, _NAME_BYTES):
            return False  # upper case, which uvicorn lowers, or a name it refuses
        values = [value for _, value in headers]
        if b"".join(values).translate(None, _VALUE_BYTES):
            return False  # uvicorn refuses it
        expected = int(values[names.index(b"content-length")])
        end = b"\r\n\r\n" if self.keep_alive else b"\r\nconnection: close\r\n\r\n"
        self.head = b"".join(
            (STATUS_LINE[message["status"]], b"\r\n".join(map(b": ".join, headers)), end)
        )
        self.response_started = True
        self.waiting_for_100_continue = False
        self.chunked_encoding = False
        self.expected_content_length = expected
        return True
