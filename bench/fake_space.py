"""A fast fake Gradio Space for the benchmark: ``/config``, ``/gradio_api/info`` and the
two-step ``/gradio_api/call/predict`` queue API, with an optional delay before the result;
it also answers as an OpenAI-compatible server (``/v1/models``, ``/v1/chat/completions``).

A call submitted with a ``session_hash`` has its messages on the session's stream, ``GET
/gradio_api/queue/data``, as gradio 6 sends them (estimation, process_starts, generating,
completed; ``close_stream`` once nothing is pending): its events keep nothing per session, so
the gateway shares one session between its calls.

Raw asyncio on uvloop with keep-alive, so that it is never the bottleneck.
Run: ``python -m bench.fake_space PORT DELAY_MS [GAP_MS]``: the delay holds a whole result and
a stream's first event; the gap is between streamed words (5 ms unless given).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import Callable
from functools import partial
from typing import cast

import uvloop

CONFIG = json.dumps(
    {
        "version": "6.31.0",
        "api_prefix": "/gradio_api",
        "protocol": "sse_v3",
        "connect_heartbeat": False,
        "components": [
            {"id": 1, "type": "textbox", "props": {}},
            {"id": 2, "type": "slider", "props": {}},
            {"id": 3, "type": "textbox", "props": {}},
        ],
        "dependencies": [
            {"id": 0, "api_name": "predict", "inputs": [1, 2], "outputs": [3]},
            {"id": 1, "api_name": "predict_stream", "inputs": [1, 2], "outputs": [3]},
        ],
    }
).encode()
_PARAMS = [
    {"parameter_name": "inputs", "label": "inputs", "type": {"type": "string"}},
    {
        "parameter_name": "max_new_tokens",
        "label": "max_new_tokens",
        "parameter_default": 64,
        "type": {"type": "number"},
    },
]
INFO = json.dumps(
    {
        "named_endpoints": {
            "/predict": {"parameters": _PARAMS},
            "/predict_stream": {"parameters": _PARAMS},
        }
    }
).encode()
STREAM_WORDS = "Sleep seven to nine hours and keep a regular schedule.".split()
# Between streamed words; the first event is sent at once (time to first token).
STREAM_GAP = 0.005
RESULT = (
    b"event: complete\ndata: "
    + json.dumps(
        [
            {
                "generated_text": "Sleep 7-9 hours, keep a regular schedule, and limit "
                "caffeine late in the day. This is not medical advice."
            }
        ]
    ).encode()
    + b"\n\n"
)
# The same answer from an OpenAI-compatible server (UPSTREAM_KIND=openai): one request.
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "llama-2-7b-chat",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Sleep 7-9 hours, keep a regular schedule, and limit caffeine "
                    "late in the day. This is not medical advice.",
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 24, "total_tokens": 44},
    }
).encode()
RESULT_DATA = json.loads(RESULT.split(b"data: ", 1)[1])
MODELS = json.dumps({"object": "list", "data": [{"id": "llama-2-7b-chat", "object": "model"}]})
_ids = itertools.count()


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class Session:
    """One session's messages: written to its open stream, else kept until one opens."""

    def __init__(self) -> None:
        self.pending: set[str] = set()  # events whose completion has not gone out yet
        self.backlog: list[tuple[bytes, str | None]] = []
        self.stream: SpaceProtocol | None = None

    def emit(self, message: dict[str, object], completes: str | None = None) -> None:
        item = (b"data: " + json.dumps(message).encode() + b"\n\n", completes)
        if self.stream is None:
            self.backlog.append(item)
        else:
            self._send(*item)

    def _send(self, payload: bytes, completes: str | None) -> None:
        stream = self.stream
        assert stream is not None
        if completes is None:
            stream.write(_chunk(payload))
            return
        self.pending.discard(completes)
        if self.pending:
            stream.write(_chunk(payload))
            return
        stream.write(_chunk(payload) + _chunk(b'data: {"msg": "close_stream"}\n\n') + b"0\r\n\r\n")
        self.stream = None

    def open(self, stream: SpaceProtocol) -> None:
        stream.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        self.stream = stream
        backlog, self.backlog = self.backlog, []
        for index, item in enumerate(backlog):
            self._send(*item)
            if self.stream is None:  # closed: the rest waits for the next stream
                self.backlog = backlog[index + 1 :]
                return


SESSIONS: dict[str, Session] = {}
MAX_SESSIONS = 1000


def _response(body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: "
        + content_type
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


class SpaceProtocol(asyncio.Protocol):
    def __init__(self, delay: float, gap: float = STREAM_GAP) -> None:
        self.delay = delay
        self.gap = gap
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"content-length:")
            if at >= 0:
                length = int(
                    lower[
                        at + 15 : lower.find(b"\r\n", at) if lower.find(b"\r\n", at) > 0 else None
                    ]
                )
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path, _ = head[: head.find(b"\r\n")].split(b" ", 2)
            if b"session_hash" in body:
                self.join(path, body)
            else:
                self.handle(method, path)

    def write(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(payload)

    def stream(self) -> None:
        """Accumulated ``generating`` events in chunked encoding, then ``complete``."""
        self.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        loop = asyncio.get_running_loop()

        def chunk(payload: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(payload), payload)

        for index in range(len(STREAM_WORDS) + 1):
            text = " ".join(STREAM_WORDS[: index + 1])
            if index < len(STREAM_WORDS):
                event = b"event: generating\ndata: " + json.dumps([text]).encode() + b"\n\n"
                payload = chunk(event)
            else:
                event = b"event: complete\ndata: " + json.dumps([text]).encode() + b"\n\n"
                payload = chunk(event) + b"0\r\n\r\n"
            at = self.delay + self.gap * index
            if at == 0:
                self.write(payload)
            else:
                loop.call_later(at, self.write, payload)

    def join(self, path: bytes, body: bytes) -> None:
        """A call in a session: its id now, its messages on the session's stream."""
        event_id = str(next(_ids))
        key = json.loads(body)["session_hash"]
        # The most recently used last; the oldest go (a call with a session of its own
        # reads its own stream, and nothing reads the session's).
        session = SESSIONS.pop(key) if key in SESSIONS else Session()
        SESSIONS[key] = session
        if len(SESSIONS) > MAX_SESSIONS:
            del SESSIONS[next(iter(SESSIONS))]
        session.pending.add(event_id)
        self.write(_response(b'{"event_id": "%s"}' % event_id.encode()))
        session.emit({"msg": "estimation", "event_id": event_id, "rank": 0, "queue_size": 1})
        session.emit({"msg": "process_starts", "event_id": event_id, "eta": None})
        loop = asyncio.get_running_loop()

        def completed(data: object) -> None:
            output = {"data": data, "is_generating": False, "duration": 0.01}
            message = {"msg": "process_completed", "event_id": event_id, "output": output}
            session.emit({**message, "success": True}, completes=event_id)

        if not path.endswith(b"_stream"):
            if self.delay:
                loop.call_later(self.delay, completed, RESULT_DATA)
            else:
                completed(RESULT_DATA)
            return
        for index in range(len(STREAM_WORDS) + 1):
            text = " ".join(STREAM_WORDS[: index + 1])
            action: Callable[[], None]
            if index < len(STREAM_WORDS):
                output = {"data": [text], "is_generating": True}
                message = {"msg": "process_generating", "event_id": event_id, "output": output}
                action = partial(session.emit, {**message, "success": True})
            else:
                action = partial(completed, [text])
            at = self.delay + self.gap * index
            if at == 0:
                action()
            else:
                loop.call_later(at, action)

    def handle(self, method: bytes, path: bytes) -> None:
        if path.startswith(b"/gradio_api/queue/data?session_hash="):
            session = SESSIONS.get(path.rsplit(b"=", 1)[1].decode())
            if session is None or session.stream is not None:
                self.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            else:
                session.open(self)
        elif path == b"/config":
            self.write(_response(CONFIG))
        elif path == b"/gradio_api/info":
            self.write(_response(INFO))
        elif path == b"/v1/models":
            self.write(_response(MODELS.encode()))
        elif method == b"POST" and path == b"/v1/chat/completions":
            answer = _response(COMPLETION)
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self.write, answer)
            else:
                self.write(answer)
        elif method == b"POST" and path in (
            b"/gradio_api/call/predict",
            b"/gradio_api/call/predict_stream",
        ):
            self.write(_response(b'{"event_id": "%d"}' % next(_ids)))
        elif path.startswith(b"/gradio_api/call/predict_stream/"):
            self.stream()
        elif path.startswith(b"/gradio_api/call/predict/"):
            answer = _response(RESULT, b"text/event-stream")
            if self.delay:
                asyncio.get_running_loop().call_later(self.delay, self.write, answer)
            else:
                self.write(answer)
        else:
            self.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


async def serve(port: int, delay: float, gap: float = STREAM_GAP) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SpaceProtocol(delay, gap), "127.0.0.1", port, backlog=4096
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    gap = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else STREAM_GAP
    uvloop.run(serve(int(sys.argv[1]), float(sys.argv[2]) / 1000, gap))
