"""EventStream: every frame when the client stays, a prompt and clean stop when it leaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.web.event_stream import EventStream
from proxy.web.sse import LastFrame

SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "headers": []}


class Client:
    """The server side of one connection: what was sent, and a disconnect on demand."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)
        if not message.get("more_body", True):
            self.gone.set()  # as uvicorn: a complete response ends receive() too

    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


async def test_every_frame_is_sent_and_nothing_is_left_cancelled() -> None:
    client = Client()

    async def frames() -> AsyncIterator[bytes]:
        for n in range(3):
            await asyncio.sleep(0)
            yield b"data: %d\n\n" % n

    await EventStream(frames(), media_type="text/event-stream")(SCOPE, client.receive, client.send)
    assert client.bodies() == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n", b""]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_last_frame_ends_the_response_with_it_and_the_body_still_runs_to_its_end() -> None:
    client = Client()
    finished: list[bool] = []

    async def frames() -> AsyncIterator[bytes]:
        yield b"data: 0\n\n"
        await asyncio.sleep(0)  # the client's end of the response wakes its listener here
        yield LastFrame(b"event: done\ndata: {}\n\n")
        await asyncio.sleep(0)  # and the body's own tail must not count as a departure
        finished.append(True)

    await EventStream(frames(), media_type="text/event-stream")(SCOPE, client.receive, client.send)
    assert [(m["body"], m["more_body"]) for m in client.sent[1:]] == [
        (b"data: 0\n\n", True),
        (b"event: done\ndata: {}\n\n", False),
    ]
    assert finished == [True]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_frame_after_the_last_one_is_an_error_not_a_second_end() -> None:
    client = Client()

    async def frames() -> AsyncIterator[bytes]:
        yield LastFrame(b"data: [DONE]\n\n")
        yield b"data: late\n\n"

    with pytest.raises(RuntimeError, match="after its last frame"):
        await EventStream(frames(), media_type="text/event-stream")(
            SCOPE, client.receive, client.send
        )
    assert client.bodies() == [b"data: [DONE]\n\n"]


async def test_a_client_that_leaves_stops_the_stream_and_closes_its_body() -> None:
    client = Client()
    closed = asyncio.Event()
    never = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            await never.wait()  # an upstream that has nothing more yet
            yield b"data: never\n\n"
        finally:
            closed.set()

    async def leave() -> None:
        while len(client.sent) < 2:
            await asyncio.sleep(0)
        client.gone.set()

    leaving = asyncio.create_task(leave())
    response = EventStream(frames(), media_type="text/event-stream")
    await asyncio.wait_for(response(SCOPE, client.receive, client.send), 5)
    await leaving
    assert client.bodies() == [b"data: first\n\n"] and closed.is_set()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_a_client_that_leaves_while_a_frame_is_being_sent_closes_the_body_too() -> None:
    client = Client()
    closed = asyncio.Event()
    slow = asyncio.Event()
    send = client.send

    async def slow_send(message: dict[str, Any]) -> None:
        await send(message)
        if message.get("body") == b"data: first\n\n":
            client.gone.set()
            await slow.wait()  # a full socket buffer: the client leaves meanwhile

    async def frames() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\n\n"
            yield b"data: second\n\n"
        finally:
            closed.set()

    response = EventStream(frames(), media_type="text/event-stream")
    await asyncio.wait_for(response(SCOPE, client.receive, slow_send), 5)
    assert closed.is_set() and client.bodies() == [b"data: first\n\n"]


async def test_a_cancellation_from_elsewhere_is_not_swallowed() -> None:
    client = Client()
    started = asyncio.Event()

    async def frames() -> AsyncIterator[bytes]:
        started.set()
        await asyncio.Event().wait()
        yield b""

    response = EventStream(frames(), media_type="text/event-stream")
    streaming = asyncio.create_task(response(SCOPE, client.receive, client.send))
    await started.wait()
    streaming.cancel()
    with pytest.raises(asyncio.CancelledError):
        await streaming


async def test_an_asgi_2_4_server_gets_starlettes_own_path() -> None:
    client = Client()

    async def frames() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"

    scope = {**SCOPE, "asgi": {"version": "3.0", "spec_version": "2.4"}}
    await EventStream(frames(), media_type="text/event-stream")(scope, client.receive, client.send)
    assert client.bodies() == [b"data: 1\n\n", b""]
