"""Server-Sent Events frames, as the streaming routes send them."""

from __future__ import annotations

import orjson


def frame(event: str | None, payload: object) -> bytes:
    """One SSE frame carrying ``payload`` as JSON."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"
