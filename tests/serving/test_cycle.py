"""EdgeCycle writes the bytes uvicorn's own cycle writes: in one write for a sized body, and
a streamed head with its first chunk when that chunk comes in the same event-loop turn."""

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
SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


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


def cycle_of(cls: type[RequestResponseCycle], *, method: str = "POST", keep_alive: bool = True,
             default_headers: list[tuple[bytes, bytes]] = DEFAULT) -> Cycle:  # fmt: skip
    transport = Transport()
    completed: list[int] = []
    cycle = cls(
        scope={"method": method, "headers": []},  # type: ignore[typeddict-item]
        transport=transport,
        flow=FlowControl(transport),
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=default_headers,
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
    "a streamed reply of three chunks, the last with its end": (
        [start(SSE), body(b"data: 1\n\n", True), body(b"data: 2\n\n", True),
         body(b"data: [DONE]\n\n")], {}),
    "a streamed reply whose first body is empty": (
        [start(SSE), body(b"", True), body(b"data: 1\n\n", True), body(b"")], {}),
    "a streamed reply in one body": ([start(SSE), body(b"data: 1\n\n")], {}),
    "a streamed reply, connection not kept alive": (
        [start(SSE), body(b"data: 1\n\n", True), body(b"")], {"keep_alive": False}),
    "a streamed reply without default headers": (
        [start([]), body(b"data: 1\n\n", True), body(b"")], {"default_headers": []}),
    "a streamed reply to HEAD": ([start(SSE), body(b"", True), body(b"")], {"method": "HEAD"}),
    "a streamed 304": ([start(SSE, 304), body(b"")], {}),
    "a chunk after a stream's end": (
        [start(SSE), body(b"data: 1\n\n", True), body(b""), body(b"late", True)], {}),
    "a streamed error status": ([start(SSE, 503), body(b"data: 1\n\n", True), body(b"")], {}),
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


async def test_a_streamed_head_leaves_with_its_first_chunk_and_the_last_with_the_end() -> None:
    messages = [start(SSE), body(b"data: 1\n\n", True), body(b"data: 2\n\n", True),
                body(b"data: 3\n\n")]  # fmt: skip
    writes, completed, closed, error = await written(EdgeCycle, messages)
    theirs = await written(RequestResponseCycle, messages)
    assert (len(writes), len(theirs[0])) == (3, 4)  # the head costs no write of its own
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n")
    assert writes[2] == b"9\r\ndata: 3\n\n\r\n0\r\n\r\n"
    assert (completed, closed, error) == (True, False, None)


async def test_a_streamed_head_is_written_when_its_turn_ends_without_a_chunk() -> None:
    cycle, transport, _ = cycle_of(EdgeCycle)
    await cycle.send(start(SSE))  # type: ignore[arg-type]
    await asyncio.sleep(0)  # the turn ended with no chunk ready: the head goes alone
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 200 OK")
    assert transport.writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n")
    await cycle.send(body(b"data: 1\n\n", True))  # type: ignore[arg-type]
    assert transport.writes[1:] == [b"9\r\ndata: 1\n\n\r\n"]


async def test_a_streamed_head_held_for_a_client_that_left_is_not_written() -> None:
    cycle, transport, _ = cycle_of(EdgeCycle)
    await cycle.send(start(SSE))  # type: ignore[arg-type]
    cycle.disconnected = True
    await asyncio.sleep(0)
    assert transport.writes == []


async def test_a_client_gone_before_the_body_gets_nothing_more() -> None:
    cycle, transport, completed = cycle_of(EdgeCycle)
    await cycle.send(start(JSON))  # type: ignore[arg-type]
    cycle.disconnected = True
    await cycle.send(body(b"x" * 11))  # type: ignore[arg-type]
    assert transport.writes == [] and not completed


async def test_a_stream_whose_client_left_gets_no_more_chunks() -> None:
    cycle, transport, completed = cycle_of(EdgeCycle)
    await cycle.send(start(SSE))  # type: ignore[arg-type]
    await cycle.send(body(b"data: 1\n\n", True))  # type: ignore[arg-type]
    cycle.disconnected = True
    await cycle.send(body(b"data: 2\n\n", True))  # type: ignore[arg-type]
    await cycle.send(body(b""))  # type: ignore[arg-type]
    assert len(transport.writes) == 1 and not completed


async def test_every_byte_in_a_name_or_value_is_judged_as_uvicorn_judges_it() -> None:
    for code in range(256):
        byte = bytes([code])
        for header in ((b"x-" + byte, b"1"), (b"x-a", b"v" + byte + b"w")):
            messages = [start([*JSON, header]), body(b"x" * 11)]
            ours = await written(EdgeCycle, messages)
            theirs = await written(RequestResponseCycle, messages)
            assert (b"".join(ours[0]), *ours[1:]) == (b"".join(theirs[0]), *theirs[1:]), header
