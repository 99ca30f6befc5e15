"""The access log: one line per request, as text or JSON (LOG_FORMAT).

While the handler ``logs.configure_logging`` installed is all the ``proxy.access`` logger
reaches (as deployed), a request's line is kept as its fields in the batch of its event-loop
turn, which the handler writes as the turn ends (``LineHandler.write_soon``: one write per
turn). The batch renders its lines then, one after another: the same text the handler's
formatter would write, without a ``LogRecord`` per request, and formatted in one tight loop
rather than between two requests' other work. Any other set-up (a handler of an embedding
app's, pytest's capture, a filter) gets ordinary records.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from proxy.observe import logs
from proxy.observe.logs import Formatter, JSONFormatter, LineHandler

NAME = "proxy.access"
logger = logging.getLogger(NAME)

# One line's fields: created, request id, method, route, status, seconds, cache, upstream,
# trace id, upstream seconds.
Fields = tuple[float, str, str, str, int, float, str, str, str | None, float | None]


def _installed_only(handler: logging.Handler) -> bool:
    """Whether ``handler`` is the one handler an INFO line of the access logger reaches, with
    no filter on the way but the handler's own (the Redactor passes access lines)."""
    if not logger.isEnabledFor(logging.INFO) or handler.level > logging.INFO or logger.filters:
        return False
    node: logging.Logger | None = logger
    while node is not None:
        if node.handlers:
            return node is logging.root and len(node.handlers) == 1 and node.handlers[0] is handler
        if not node.propagate:
            return False
        node = node.parent
    return False


def _message(fields: Fields) -> str:
    _, request_id, method, route, status, elapsed, cache = fields[:7]
    return f"{request_id} {method} {route} {status} {elapsed * 1000:.1f}ms {cache}"


def _json_fields(fields: Fields) -> dict[str, Any]:
    _, request_id, method, route, status, elapsed, cache, upstream, trace_id, upstream_s = fields
    return {
        "request_id": request_id,
        "method": method,
        "route": route,
        "status": status,
        "cache": cache,
        "upstream": upstream,
        "duration_ms": round(elapsed * 1000, 2),
        "trace_id": trace_id,
        "upstream_ms": round(upstream_s * 1000, 2) if upstream_s is not None else None,
    }


class Batch:
    """The access lines of one event-loop turn, in the handler's pending lines; rendered (and
    closed: later lines start a batch of their own) when the handler writes them."""

    __slots__ = ("fields", "formatter", "terminator", "open")

    def __init__(self, formatter: Formatter, terminator: str) -> None:
        self.fields: list[Fields] = []
        self.formatter = formatter
        self.terminator = terminator
        self.open = True

    def __str__(self) -> str:
        self.open = False
        formatter = self.formatter
        if isinstance(formatter, JSONFormatter):
            lines = []
            for fields in self.fields:
                entry = formatter.head(fields[0], "info", NAME)
                entry.update(_json_fields(fields))
                lines.append(orjson.dumps(entry).decode())
            return self.terminator.join(lines)
        stamp = formatter.stamp
        return self.terminator.join(
            f"{stamp(fields[0])} INFO {NAME}: {_message(fields)}" for fields in self.fields
        )


def _queued(handler: LineHandler | None, fields: Fields) -> bool:
    """Whether the line went into the turn's open batch (opened if the turn has none); False
    when lines must be ordinary records."""
    if handler is None:
        return False
    pending = handler.pending
    if pending and type(last := pending[-1]) is Batch and last.open:
        last.fields.append(fields)
        return True
    formatter = handler.formatter
    if not isinstance(formatter, Formatter) or not _installed_only(handler):
        return False
    batch = Batch(formatter, handler.terminator)
    batch.fields.append(fields)
    handler.write_soon(batch)  # outside a running loop: written at once
    return True


class AccessLog:
    """Writes the access line of one request."""

    def write(
        self,
        request_id: str,
        method: str,
        route: str,
        status: int,
        elapsed: float,
        cache: str,
        upstream: str,
        trace_id: str | None,
        upstream_seconds: float | None,
    ) -> None:
        fields = (
            time.time(), request_id, method, route, status, elapsed, cache, upstream, trace_id,
            upstream_seconds,
        )  # fmt: skip
        if not _queued(logs.installed, fields):
            logger.info(_message(fields), extra={"access": _json_fields(fields)})
