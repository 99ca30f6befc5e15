"""A fake Gradio Space on raw asyncio sockets, for the failures a real Gradio app cannot make
on demand: resets, garbage, HTML error pages, 503/429 with Retry-After, error events, stalls.

Each scenario is a Space of its own under ``{url}/{scenario}``: its ``/config`` and
``/gradio_api/...`` routes answer as the scenario says. Every connection is closed after one
response, which keeps the server simple and is legal HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections import Counter
from typing import Any

from tests.support.fake_llm_servers import continue_answer
from tests.support.servers import LoopServer

INFO = {
    "named_endpoints": {
        "/predict": {
            "parameters": [
                {
                    "parameter_name": "inputs",
                    "label": "inputs",
                    "parameter_default": None,
                    "type": {"type": "string"},
                },
                {
                    "parameter_name": "max_new_tokens",
                    "label": "max_new_tokens",
                    "parameter_default": 64,
                    "type": {"type": "number", "description": "numeric value between 1 and 2048"},
                },
            ],
        }
    },
    "unnamed_endpoints": {},
}
CONFIG = {"version": "6.31.0", "api_prefix": "/gradio_api", "protocol": "sse_v3"}
SLEEPING_PAGE = b"<!doctype html><html><body><h1>This Space is sleeping</h1></body></html>"


def _response(
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json",
    extra: dict[str, str] | None = None,
) -> bytes:
    reason = {
        200: "OK",
        401: "Unauthorized",
        404: "Not Found",
        429: "Too Many Requests",
        500: "Internal Server Error",
        503: "Service Unavailable",
    }.get(status, "X")
    head = [
        f"HTTP/1.1 {status} {reason}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    head += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _json(status: int, payload: Any, **kw: Any) -> bytes:
    return _response(status, json.dumps(payload).encode(), **kw)


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
)


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class FaultSpace(LoopServer):
    """Serves every scenario on one free loopback port, from a thread with its own loop."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: Counter[str] = Counter()
        # When a slowstream client hung up (monotonic time), per event id.
        self.closed_at: dict[str, float] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        # Scenarios a test has taken down: they answer everything as a sleeping Space does.
        self.down: set[str] = set()
        # What the ``switch`` Space does now: any scenario's name, set by a test.
        self.switch = "ok"
        # Set by a test: ``cutmid`` holds its cut until the event is set (at most 10 s), so
        # that every listener the test sends has joined the stream before it breaks.
        self.cut_gate: threading.Event | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    key, value = line.split(":", 1)
                    headers[key.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if length:
                await reader.readexactly(length)  # the body is not needed
            self.requests.append((method, target, headers))
            scenario, _, path = target.lstrip("/").partition("/")
            if scenario == "switch":
                scenario = self.switch
            self.hits[f"{scenario} {method} /{path}"] += 1
            await self._answer(scenario, method, "/" + path, reader, writer, headers)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()

    async def _slow_stream(
        self, event_id: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A token every 0.1 s for 30 s; records when the client closes the connection."""

        async def watch() -> None:
            await reader.read()  # returns at EOF: the client is gone
            self.closed_at[event_id] = time.monotonic()

        watcher = asyncio.create_task(watch())
        writer.write(SSE_HEAD)
        text = ""
        try:
            for index in range(300):
                if watcher.done():
                    return
                text += f" word{index}"
                writer.write(_event("generating", [text.strip()]))
                await writer.drain()
                await asyncio.sleep(0.1)
        except ConnectionError:
            await watcher
        finally:
            watcher.cancel()

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _answer(
        self,
        scenario: str,
        method: str,
        path: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        headers: dict[str, str],
    ) -> None:
        write = writer.write
        if scenario in self.down:
            write(_response(503, SLEEPING_PAGE, content_type="text/html"))
        elif scenario == "private":
            write(_json(401, {"error": "Invalid credentials in Authorization header"}))
        elif scenario == "asleep":
            write(
                _response(503, SLEEPING_PAGE, content_type="text/html", extra={"Retry-After": "20"})
            )
        elif scenario == "html200" and path == "/config":
            write(_response(200, SLEEPING_PAGE, content_type="text/html"))
        elif path == "/config":
            write(_json(200, CONFIG))
        elif path == "/gradio_api/info":
            write(_json(200, INFO))
        elif method == "POST" and path == "/gradio_api/call/predict":
            await self._post(scenario, writer, headers)
        elif method == "GET" and path.startswith("/gradio_api/call/predict/"):
            await self._result(scenario, path, reader, writer)
        else:
            write(_response(404, b'{"detail": "Not Found"}'))
        await writer.drain()

    async def _post(
        self, scenario: str, writer: asyncio.StreamWriter, headers: dict[str, str]
    ) -> None:
        post_count = self.hits[f"{scenario} POST /gradio_api/call/predict"]
        echoed = f"got headers: {json.dumps(headers)}"
        if scenario.startswith("echo") and scenario[4:].isdigit():
            # A Space that echoes the request's headers in its error, with this status.
            writer.write(_json(int(scenario[4:]), {"error": echoed}))
        elif scenario == "toolong":
            error = {"error": "This model's maximum context length is 4096 tokens"}
            writer.write(_json(422, error))
        elif scenario == "reset":
            self._reset(writer)
        elif scenario == "garbage":
            writer.write(_response(200, b"\x00\xffnot json at all{{", content_type="text/plain"))
        elif scenario == "busy":
            writer.write(_json(503, {"detail": "Queue is full."}, extra={"Retry-After": "7"}))
        elif scenario == "flaky" and post_count % 2 == 1:  # a short wait, then it takes one
            writer.write(_json(503, {"detail": "Queue is full."}, extra={"Retry-After": "1"}))
        elif scenario == "brief429" and post_count % 2 == 1:  # a short wait, then it takes one
            writer.write(_json(429, {"error": "rate limited"}, extra={"Retry-After": "2"}))
        elif scenario == "once500" and post_count % 2 == 1:  # one bad moment, then it takes one
            writer.write(_json(500, {"detail": "Internal error"}))
        elif scenario in ("busy2", "ratelimit2", "error500"):  # short waits, every time
            status, detail = {"busy2": (503, "Queue is full."), "ratelimit2": (429, "slow down"),
                              "error500": (500, "Internal error")}[scenario]  # fmt: skip
            writer.write(_json(status, {"detail": detail}, extra={"Retry-After": "2"}))
        elif scenario == "ratelimit":
            writer.write(_json(429, {"error": "rate limited"}, extra={"Retry-After": "42"}))
        else:
            writer.write(_json(200, {"event_id": f"ev-{scenario}-{post_count}"}))

    async def _result(
        self, scenario: str, path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        write = writer.write
        if scenario == "slowstream":
            await self._slow_stream(path.rsplit("/", 1)[-1], reader, writer)
            return
        if scenario == "busyevent" and self.hits[f"{scenario} POST /gradio_api/call/predict"] % 2:
            write(SSE_HEAD + _event("error", {"error": "Queue is full. Please try again later."}))
        elif scenario == "apperror":
            write(SSE_HEAD + _event("error", {"error": "CUDA out of memory", "visible": True}))
        elif scenario == "echoevent":
            seen = self.requests[-1][2]  # this request's headers, the token among them
            write(SSE_HEAD + _event("error", {"error": f"got headers: {json.dumps(seen)}"}))
        elif scenario == "apperror_null":
            write(SSE_HEAD + _event("error", {"error": None}))
        elif scenario == "quota":
            write(
                SSE_HEAD
                + _event(
                    "error",
                    {"error": "You have exceeded your GPU quota (46s left vs. 60s requested)."},
                )
            )
        elif scenario == "quota_named":  # ZeroGPU naming the wait
            error = "You have exceeded your GPU quota (60s requested vs. 0s left). Retry in 0:05:22"
            write(SSE_HEAD + _event("error", {"error": error}))
        elif scenario == "heartbeats":
            write(SSE_HEAD)
            while True:
                write(b"event: heartbeat\ndata: null\n\n")
                await writer.drain()
                await asyncio.sleep(0.1)
        elif scenario == "stall":
            write(SSE_HEAD)
            await writer.drain()
            await asyncio.sleep(3600)
        elif scenario in ("cutmid", "stallmid"):
            # Three tokens of ANSWER, then the connection drops or falls silent (no heartbeat).
            text = ""
            write(SSE_HEAD)
            for piece in continue_answer("")[:3]:
                text += piece
                write(_event("generating", [text]))
                await writer.drain()
                await asyncio.sleep(0.02)
            if scenario == "cutmid":
                gate = self.cut_gate
                if gate is not None:
                    await asyncio.get_running_loop().run_in_executor(None, gate.wait, 10)
                self._reset(writer)
            else:
                await asyncio.sleep(3600)
        elif scenario == "reset_stream":
            write(SSE_HEAD + _event("generating", ["partial"]))
            await writer.drain()
            self._reset(writer)
        elif scenario == "nocomplete":
            write(SSE_HEAD + _event("generating", ["partial"]))
        elif scenario == "rewrite":
            write(
                SSE_HEAD
                + _event("generating", ["Caf"])
                + _event("generating", ["Café 😀 wrold"])
                + _event("generating", ["Café 😀 world, friend"])
                + _event("complete", ["Café 😀 world, friend!"])
            )
        elif scenario == "badevent":
            write(SSE_HEAD + b"event: complete\ndata: {not json\n\n")
        else:
            write(
                SSE_HEAD
                + b"event: heartbeat\ndata: null\n\n"
                + _event("generating", ["Hello"])
                + _event("complete", [{"generated_text": "Hello from the fault space"}])
            )
