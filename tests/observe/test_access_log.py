"""The access line written straight to the installed handler is the line logging would write."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Callable, Iterator

import pytest

from proxy.observe import access_log, logs
from proxy.observe.access_log import AccessLog

NOW = 1_700_000_000.0421
ARGS = ("abc123", "POST", "/api/chat", 200, 0.01234, "HIT", "mock", None, None)


Install = Callable[[str, str], io.StringIO]


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """Logging configured as the entry point does, onto a buffer for stderr (patched in the
    test itself: pytest sets its own stderr between a fixture and the test); the root logger
    as it was afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logs.installed
    monkeypatch.setattr(access_log.time, "time", lambda: NOW)

    def installed(level: str, fmt: str) -> io.StringIO:
        buffer = io.StringIO()
        monkeypatch.setattr(sys, "stderr", buffer)
        logs.configure_logging(level, fmt)
        return buffer

    yield installed
    root.handlers[:], logs.installed = saved[0], saved[2]
    root.setLevel(saved[1])


def logged_line() -> str:
    """What the installed handler's formatter makes of the same line as a LogRecord."""
    assert logs.installed is not None
    message = "abc123 POST /api/chat 200 12.3ms HIT"
    fields = {"request_id": "abc123", "method": "POST", "route": "/api/chat", "status": 200,
              "cache": "HIT", "upstream": "mock", "duration_ms": 12.34, "trace_id": None,
              "upstream_ms": None}  # fmt: skip
    record = logging.LogRecord("proxy.access", logging.INFO, "", 0, message, None, None)
    record.created, record.msecs = NOW, int((NOW - int(NOW)) * 1000) + 0.0
    record.access = fields
    return logs.installed.format(record)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_direct_line_is_the_line_logging_writes(install: Install, fmt: str) -> None:
    stderr = install("info", fmt)
    AccessLog().write(*ARGS)
    assert stderr.getvalue() == logged_line() + "\n"
    if fmt == "json":
        entry = json.loads(stderr.getvalue())
        assert entry["logger"] == "proxy.access" and entry["cache"] == "HIT"


def test_another_handler_gets_records(install: Install) -> None:
    """With a handler of someone else's on the way, lines are records again: that handler
    sees them and the installed one still writes them, once."""
    stderr = install("info", "text")
    seen: list[logging.LogRecord] = []
    other = logging.Handler()
    other.emit = seen.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(other)
    AccessLog().write(*ARGS)
    assert [r.getMessage() for r in seen] == ["abc123 POST /api/chat 200 12.3ms HIT"]
    assert stderr.getvalue().count("abc123") == 1


def test_a_quiet_level_writes_nothing(install: Install) -> None:
    stderr = install("warning", "text")
    package = logging.getLogger("proxy")
    level = package.level  # the test suite's own DEBUG
    package.setLevel(logging.NOTSET)
    try:
        AccessLog().write(*ARGS)
    finally:
        package.setLevel(level)
    assert stderr.getvalue() == ""


def test_a_filter_on_the_access_logger_is_obeyed(install: Install) -> None:
    stderr = install("info", "text")
    dropped = logging.Filter("nothing")  # passes no record of proxy.access
    access_log.logger.addFilter(dropped)
    try:
        AccessLog().write(*ARGS)
    finally:
        access_log.logger.removeFilter(dropped)
    assert stderr.getvalue() == ""


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_one_turn_of_lines_is_one_write_in_order(
    install: Install, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines written in one event-loop turn reach stderr together as the turn ends; a record
    logged after them comes after them, and nothing is left behind."""
    install("info", "text")
    assert logs.installed is not None
    stream = CountingStream()
    monkeypatch.setattr(logs.installed, "stream", stream)
    for request_id in ("r1", "r2", "r3"):
        AccessLog().write(request_id, *ARGS[1:])
    assert stream.getvalue() == ""  # not yet: the turn has not ended
    await asyncio.sleep(0)
    lines = stream.getvalue().splitlines()
    assert [line.split(" INFO proxy.access: ")[1].split()[0] for line in lines] == [
        "r1", "r2", "r3"]  # fmt: skip
    assert stream.writes == 1
    AccessLog().write("r4", *ARGS[1:])
    logging.getLogger("proxy.app").warning("after r4")
    lines = stream.getvalue().splitlines()
    assert "r4" in lines[3] and lines[4].endswith("proxy.app: after r4")
    AccessLog().write("r5", *ARGS[1:])
    logs.installed.flush()  # as logging.shutdown does at exit
    assert stream.getvalue().splitlines()[-1].split(": ")[1].startswith("r5 POST")


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_lines_of_a_turn_keep_the_time_they_were_written(
    install: Install, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """A turn's lines are written together, each with its own request's time and fields."""
    stderr = install("info", fmt)
    times = iter([NOW, NOW + 0.25, NOW + 1.5])
    monkeypatch.setattr(access_log.time, "time", lambda: next(times))
    for request_id in ("r1", "r2", "r3"):
        AccessLog().write(request_id, *ARGS[1:])
    await asyncio.sleep(0)
    lines = stderr.getvalue().splitlines()
    formatter = logs.installed.formatter if logs.installed is not None else None
    assert isinstance(formatter, logs.Formatter)
    if fmt == "json":
        entries = [json.loads(line) for line in lines]
        assert [e["request_id"] for e in entries] == ["r1", "r2", "r3"]
        assert [e["time"] for e in entries] == [
            formatter.stamp(t, "%Y-%m-%dT%H:%M:%S") for t in (NOW, NOW + 0.25, NOW + 1.5)
        ]
        assert {e["duration_ms"] for e in entries} == {12.34}
    else:
        assert [line.split(" INFO ")[0] for line in lines] == [
            formatter.stamp(t) for t in (NOW, NOW + 0.25, NOW + 1.5)
        ]
        assert [line.split(": ")[1] for line in lines] == [
            f"{request_id} POST /api/chat 200 12.3ms HIT" for request_id in ("r1", "r2", "r3")
        ]
