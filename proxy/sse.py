"""Server-Sent Events, both ways: parse an upstream's event stream, and build frames to send."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

import orjson


async def parse_events(lines: AsyncIterable[bytes]) -> AsyncIterator[tuple[str, str]]:
    """Yield ``(event, data)`` for each event in a stream of lines (WHATWG SSE rules: ``event``
    defaults to ``message``, multi-line ``data`` is joined with newlines, comments are skipped)."""
    event = ""
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data or event:
                yield event or "message", "\n".join(data)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    if data or event:
        yield event or "message", "\n".join(data)


def frame(event: str | None, payload: object) -> bytes:
    """One SSE frame carrying ``payload`` as JSON."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"
