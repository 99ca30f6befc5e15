"""EdgeCycle writes the bytes uvicorn's own cycle writes, in one write for a sized body."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from proxy.serving.cycle import EdgeCycle

DEFAULT = [(b"server", b"uvicorn"), (b"date", b"Mon, 07 Dec 2026 02:00:00 GMT")]
JSON = [(b"content-type", b"application/json"), (b"content-length", b"11")]


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


Cycle = tuple[RequestResponseCycle, Transport, list[int]]


def cycle_of(cls: type[RequestResponseCycle], *, method: str = "POST",
             keep_alive: bool = True) -> Cycle:  # fmt: skip
    transport = Transport()
    completed: list[int] = []
    cycle = cls(
        scope={"method": method, "headers": []},  # type: ignore[typeddict-item]
        transport=transport,
        flow=FlowControl(transport),
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=DEFAULT,
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: completed.append(1),
    )
    return cycle, transport, completed


async def written(cls: type[RequestResponseCycle], messages: list[dict[str, Any]],
                  **kwargs: Any) -> tuple[list[bytes], bool, bool, str | None]:  # fmt: skip
    """The writes, whether the response completed, whether the connection closed, an error."""
    cycle, transport, completed = cycle_of(cls, **kwargs)
    error = None
    try:
        for message in messages:
            await cycle.send(message)  # type: ignore[arg-type]
    except RuntimeError as exc:
        error = str(exc)
    return transport.writes, bool(completed), transport.closed, error


def start(headers: list[tuple[bytes, bytes]], status: int = 200) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": headers}


def body(data: bytes, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


CASES: dict[str, tuple[list[dict[str, Any]], dict[str, Any]]] = {
    "a sized JSON reply": ([start(JSON), body(b'{"ok": true}'[:11])], {}),
    "a sized reply, connection not kept alive": (
        [start(JSON), body(b"x" * 11)], {"keep_alive": False}),
    "a sized reply to HEAD": ([start(JSON), body(b"")], {"method": "HEAD"}),
    "a sized body in two parts": ([start(JSON), body(b"x" * 5, True), body(b"y" * 6)], {}),
    "a streamed reply": (
        [start([(b"content-type", b"text/event-stream")]), body(b"data: 1\n\n", True),
         body(b"")], {}),
    "no content": ([start([], 204), body(b"")], {}),
    "an upper-case name": ([start([(b"Content-Length", b"2")]), body(b"ok")], {}),
    "the app's own Connection header": (
        [start([*JSON, (b"connection", b"close")]), body(b"x" * 11)], {}),
    "a value with a line break": ([start([*JSON, (b"x-a", b"1\r\nx-b: 2")]), body(b"")], {}),
    "a name with a space": ([start([*JSON, (b"x a", b"1")]), body(b"")], {}),
    "a body shorter than its length": ([start(JSON), body(b"short")], {}),
    "a body longer than its length": ([start(JSON), body(b"x" * 20)], {}),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
async def test_the_same_bytes_as_uvicorn(case: str) -> None:
    messages, kwargs = CASES[case]
    ours = await written(EdgeCycle, messages, **kwargs)
    theirs = await written(RequestResponseCycle, messages, **kwargs)
    assert b"".join(ours[0]) == b"".join(theirs[0])
    assert ours[1:] == theirs[1:]


async def test_a_sized_reply_is_one_write() -> None:
    writes, completed, closed, error = await written(EdgeCycle, [start(JSON), body(b"x" * 11)])
    assert (len(writes), completed, closed, error) == (1, True, False, None)
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\nserver: uvicorn\r\n")
    assert writes[0].endswith(b"content-length: 11\r\n\r\n" + b"x" * 11)


async def test_a_streamed_head_is_written_before_its_first_chunk() -> None:
    cycle, transport, _ = cycle_of(EdgeCycle)
    await cycle.send(start([(b"content-type", b"text/event-stream")]))  # type: ignore[arg-type]
    assert transport.writes and transport.writes[0].startswith(b"HTTP/1.1 200 OK")


async def test_a_client_gone_before_the_body_gets_nothing_more() -> None:
    cycle, transport, completed = cycle_of(EdgeCycle)
    await cycle.send(start(JSON))  # type: ignore[arg-type]
    cycle.disconnected = True
    await cycle.send(body(b"x" * 11))  # type: ignore[arg-type]
    assert transport.writes == [] and not completed


async def test_every_byte_in_a_name_or_value_is_judged_as_uvicorn_judges_it() -> None:
    for code in range(256):
        byte = bytes([code])
        for header in ((b"x-" + byte, b"1"), (b"x-a", b"v" + byte + b"w")):
            messages = [start([*JSON, header]), body(b"x" * 11)]
            ours = await written(EdgeCycle, messages)
            theirs = await written(RequestResponseCycle, messages)
            assert (b"".join(ours[0]), *ours[1:]) == (b"".join(theirs[0]), *theirs[1:]), header
