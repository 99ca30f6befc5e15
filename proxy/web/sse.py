"""Server-Sent Events frames, as the streaming routes send them."""

from __future__ import annotations

import orjson


class LastFrame(bytes):
    """A stream's last bytes: ``EventStream`` sends them with the end of the response, so the
    last frame and the end of the chunked body leave in one write, not two."""


def frame(event: str | None, payload: object) -> bytes:
    """One SSE frame carrying ``payload`` as JSON."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


def last_frame(event: str | None, payload: object) -> LastFrame:
    """``frame``, as the stream's last."""
    return LastFrame(frame(event, payload))
