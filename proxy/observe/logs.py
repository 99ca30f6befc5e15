"""Log output: plain text lines, or one JSON object per line (LOG_FORMAT=json)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any, TextIO

import orjson

from proxy.observe.redaction import Redactor

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class Formatter(logging.Formatter):
    """``logging.Formatter`` with the date and time formatted once a second, not once a line:
    ``localtime`` and ``strftime`` cost about a quarter of an access line. Same text."""

    _second: int | None = None
    _datefmt: str | None = None
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(record.created, datefmt)

    def stamp(self, created: float, datefmt: str | None = None) -> str:
        """``created`` as ``formatTime`` writes a record created then."""
        second = int(created)
        if second != self._second or datefmt != self._datefmt:
            converted = self.converter(created)
            self._stamp = time.strftime(datefmt or self.default_time_format, converted)
            self._second, self._datefmt = second, datefmt
        if datefmt or not self.default_msec_format:
            return self._stamp
        # As LogRecord computes msecs.
        return self.default_msec_format % (self._stamp, int((created - second) * 1000) + 0.0)


class JSONFormatter(Formatter):
    """One JSON object per record; access-log records carry their fields at the top level.
    ``pid`` tells the workers apart (read once: each worker configures its own logging)."""

    def __init__(self) -> None:
        super().__init__()
        self.pid = os.getpid()

    def head(self, created: float, level: str, name: str) -> dict[str, Any]:
        """The fields every line starts with."""
        return {
            "time": self.stamp(created, "%Y-%m-%dT%H:%M:%S"),
            "level": level,
            "logger": name,
            "pid": self.pid,
        }

    def format(self, record: logging.LogRecord) -> str:
        entry = self.head(record.created, record.levelname.lower(), record.name)
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            entry.update(access)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:  # formatted (and redacted) by the handler's filter
            entry["exception"] = record.exc_text
        return orjson.dumps(entry).decode()


class LineHandler(logging.StreamHandler[TextIO]):
    """A stream handler that also takes preformatted lines (the access log's) and writes those
    of one event-loop turn together, in one write, as the turn ends: a busy process otherwise
    makes a write to stderr per request. Order is kept: a record, ``flush`` and ``close``
    first write what is pending. A process killed outright (SIGKILL) loses at most the lines
    of the turn it was in; an exit or a stop writes them."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        # Lines, or objects that render theirs when written (the access log's batches).
        self.pending: list[object] = []

    def write_soon(self, line: object) -> None:
        pending = self.pending
        pending.append(line)
        if len(pending) == 1:
            loop = asyncio._get_running_loop()
            if loop is None:
                self.write_pending()
            else:
                loop.call_soon(self.write_pending)

    def write_pending(self) -> None:
        if not self.pending:
            return
        self.acquire()
        try:
            lines, self.pending = self.pending, []
            lines.append("")  # the last line's terminator
            self.stream.write(self.terminator.join(map(str, lines)))
            self.stream.flush()
        except Exception:  # as StreamHandler.emit: a broken stderr fails no request
            pass
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        self.write_pending()
        super().emit(record)

    def flush(self) -> None:  # logging.shutdown, at exit, flushes every handler
        self.write_pending()
        super().flush()

    def close(self) -> None:
        self.write_pending()
        super().close()


def configure_logging(level: str, log_format: str, secrets: tuple[str, ...] = ()) -> None:
    """Log to stderr as text or JSON, ``secrets`` and Bearer credentials redacted from every
    line; called only by the entry point, never on import."""
    # Fields no format of ours shows, each costing a call per record: the caller's file and
    # line (a stack walk), the thread, the process id. The logging HOWTO's "Optimization"
    # section names these switches; with an access line per request they are a tenth of a
    # cheap request's time.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global installed
    handler = LineHandler(sys.stderr)
    handler.addFilter(Redactor(secrets))
    handler.setFormatter(JSONFormatter() if log_format == "json" else Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    installed = handler


# The handler configure_logging installed (the access log writes to it directly).
installed: LineHandler | None = None
