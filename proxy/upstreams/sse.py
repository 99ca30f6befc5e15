"""Decoding an upstream's Server-Sent Events stream, incrementally and with a bound."""

from __future__ import annotations

from proxy.errors import UpstreamBadResponse

# The largest event an upstream may send (a Space's generating event carries the whole text
# so far, and a Chatbot the whole conversation: a few hundred KiB at most in practice).
MAX_EVENT_BYTES = 1 << 20


class SSEDecoder:
    """Incremental decoder: feed it bytes as they arrive, get complete ``(event, data)`` pairs.

    Follows the WHATWG rules that matter here: events end at a blank line, ``event`` defaults
    to ``message``, multi-line ``data`` is joined with newlines, comment lines are skipped, and
    CRLF, LF and CR line endings are all accepted. Parsing whole chunks at once instead of
    awaiting line by line keeps the upstream hop cheap. Linear in what it receives: a chunk
    without an event boundary is only kept, not searched again; an event that grows past
    ``max_event_bytes`` raises ``UpstreamBadResponse`` (``upstream_event_too_large``).
    """

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._pending: list[bytes] = []  # the unfinished event, in pieces
        self._size = 0
        self._last = b""  # the last byte kept: a boundary may straddle two chunks
        self._cr = False  # the last chunk ended with CR: a LF starting the next is its pair
        self._max = max_event_bytes

    def _check_size(self) -> None:
        if self._size > self._max:
            self._pending, self._size = [], 0
            raise UpstreamBadResponse(
                f"the upstream sent an event over {self._max} bytes",
                code="upstream_event_too_large",
            )

    def feed(self, chunk: bytes) -> list[tuple[str, str]]:
        if self._cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._cr = chunk.endswith(b"\r")
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not chunk:
            return []
        if b"\n\n" not in self._last + chunk:
            self._pending.append(chunk)
            self._size += len(chunk)
            self._last = chunk[-1:]
            if self._size > self._max:
                self._pending, self._size = [], 0
                raise UpstreamBadResponse(
                    f"the upstream sent an event over {self._max} bytes",
                    code="upstream_event_too_large",
                )
            return []
        buffer = b"".join([*self._pending, chunk])
        *blocks, rest = buffer.split(b"\n\n")
        self._pending, self._size, self._last = (
            ([rest], len(rest), rest[-1:])
            if rest
            else (
                [],
                0,
                b"",
            )
        )
        if self._size > self._max:
            self._pending, self._size = [], 0
            raise UpstreamBadResponse(
                f"the upstream sent an event over {self._max} bytes",
                code="upstream_event_too_large",
            )
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
