"""Server-Sent Events, both ways: decode an upstream's event stream, and build frames to send."""

from __future__ import annotations

import orjson


class SSEDecoder:
    """Incremental decoder: feed it bytes as they arrive, get complete ``(event, data)`` pairs.

    Follows the WHATWG rules that matter here: events end at a blank line, ``event`` defaults
    to ``message``, multi-line ``data`` is joined with newlines, comment lines are skipped, and
    CRLF, LF and CR line endings are all accepted. Parsing whole chunks at once instead of
    awaiting line by line keeps the upstream hop cheap.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, self._buffer = buffer.split(b"\n\n")
        events = []
        for block in blocks:
            event, data = "", []
            for line in block.decode("utf-8", "replace").split("\n"):
                if not line or line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
            if event or data:
                events.append((event or "message", "\n".join(data)))
        return events


def frame(event: str | None, payload: object) -> bytes:
    """One SSE frame carrying ``payload`` as JSON."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"
