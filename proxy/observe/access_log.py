"""The access log: one line per request, as text or JSON (LOG_FORMAT).

While the handler ``logs.configure_logging`` installed is all the ``proxy.access`` logger
reaches (as deployed), a line is formatted here and handed to it (``LineHandler.write_soon``:
the lines of one event-loop turn in one write): the same text its formatter would write,
without a ``LogRecord`` per request. Any other set-up (a
handler of an embedding app's, pytest's capture, a filter) gets ordinary records.
"""

from __future__ import annotations

import logging
import time

import orjson

from proxy.observe import logs
from proxy.observe.logs import Formatter, JSONFormatter

NAME = "proxy.access"
logger = logging.getLogger(NAME)


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
        message = f"{request_id} {method} {route} {status} {elapsed * 1000:.1f}ms {cache}"
        handler = logs.installed
        json: JSONFormatter | None = None  # set when the line goes straight to ``handler``
        if handler is not None and isinstance(handler.formatter, Formatter):
            formatter = handler.formatter
            if _installed_only(handler):
                if not isinstance(formatter, JSONFormatter):
                    handler.write_soon(f"{formatter.stamp(time.time())} INFO {NAME}: {message}")
                    return
                json = formatter
        fields = {
            "request_id": request_id,
            "method": method,
            "route": route,
            "status": status,
            "cache": cache,
            "upstream": upstream,
            "duration_ms": round(elapsed * 1000, 2),
            "trace_id": trace_id,
            "upstream_ms": (
                round(upstream_seconds * 1000, 2) if upstream_seconds is not None else None
            ),
        }
        if handler is None or json is None:
            logger.info(message, extra={"access": fields})
            return
        entry = json.head(time.time(), "info", NAME)
        entry.update(fields)
        handler.write_soon(orjson.dumps(entry).decode())
