"""A fake Gradio app whose event keeps nothing per session, speaking the session stream
(``GET /gradio_api/queue/data``) as gradio 6 does, with the faults a real one cannot make on
demand: a stream cut under several calls, one that closes early, messages that come before
the submit's answer, and no session stream at all.

Messages wait in their session's queue until a stream reads them, and a stream ends with
``close_stream`` once nothing is pending in its session, as in gradio's ``queue_data``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.servers import LoopServer

CONFIG = {
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
        {"id": 0, "api_name": "predict", "inputs": [1, 2], "outputs": [3], "backend_fn": True}
    ],
}
INFO = {
    "named_endpoints": {
        "/predict": {
            "parameters": [
                {"parameter_name": "inputs", "label": "inputs", "type": {"type": "string"}},
                {
                    "parameter_name": "max_new_tokens",
                    "label": "max_new_tokens",
                    "parameter_default": 64,
                    "type": {"type": "number"},
                },
            ]
        }
    }
}
WORDS = 5


def _response(status: int, payload: Any) -> bytes:
    body = json.dumps(payload).encode()
    reason = {200: "OK", 404: "Not Found"}.get(status, "X")
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def _tag(prompt: str) -> str:
    found = re.search(r"answer with (\w+)", prompt)
    return found.group(1) if found else "-"


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


class SessionSpace(LoopServer):
    """Serves one app on a free loopback port from a thread with its own loop.

    ``mode``: ``ok``; ``cut`` (the stream is reset after ``cut_after`` generating messages,
    once, and the session's events dropped);
    ``closing`` (the stream closes after each completed event, pending or not); ``early``
    (a submit is answered once its event's every message went out on an open stream, unless
    its prompt says ``answer with long``: such an event runs four times as many words);
    in every mode an event for ``answer with stall`` sends no word, and one for ``answer with
    halt`` one word, then nothing (until cancelled);
    ``nostream`` (no session stream: each call's own ``GET /gradio_api/call/predict/{id}``)."""

    def __init__(self, mode: str = "ok", *, gap: float = 0.02, cut_after: int = 6) -> None:
        super().__init__()
        self.mode = mode
        self.gap = gap
        self.cut_after = cut_after
        self.hits: Counter[str] = Counter()  # "METHOD /path" without the query
        self.cancelled: list[str] = []
        self.sessions: set[str] = set()
        self._queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._pending: dict[str, set[str]] = {}
        self._runs: dict[str, asyncio.Task[None]] = {}
        self._written: dict[str, asyncio.Event] = {}
        self._ids = 0
        self._generated = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            method, target, _ = head.split("\r\n", 1)[0].split(" ", 2)
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = json.loads(await reader.readexactly(length)) if length else {}
            url = urlsplit(target)
            self.hits[f"{method} {url.path}"] += 1
            await self._answer(method, url.path, parse_qs(url.query), body, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client left, or the server is stopping
        finally:
            if not writer.is_closing():
                writer.close()

    async def _answer(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: dict[str, Any],
        writer: asyncio.StreamWriter,
    ) -> None:
        if path == "/config":
            writer.write(_response(200, CONFIG))
        elif path == "/gradio_api/info":
            writer.write(_response(200, INFO))
        elif method == "POST" and path == "/gradio_api/call/predict":
            await self._submit(body, writer)
        elif method == "POST" and path == "/gradio_api/cancel":
            self.cancelled.append(str(body.get("event_id")))
            run = self._runs.pop(str(body.get("event_id")), None)
            if run is not None:
                run.cancel()
            writer.write(_response(200, {"success": True}))
        elif method == "GET" and path == "/gradio_api/queue/data" and self.mode != "nostream":
            await self._stream(query.get("session_hash", [""])[0], writer)
        elif method == "GET" and path.startswith("/gradio_api/call/predict/"):
            await self._own_stream(body, writer)
        else:
            writer.write(_response(404, {"detail": "Not Found"}))

    async def _submit(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        self._ids += 1
        event_id = f"ev{self._ids}"
        session = str(body.get("session_hash") or event_id)
        self.sessions.add(session)
        prompt = str((body.get("data") or [""])[0])
        if self.mode != "nostream":
            queue = self._queues.setdefault(session, asyncio.Queue())
            self._pending.setdefault(session, set()).add(event_id)
            self._runs[event_id] = asyncio.create_task(self._run(event_id, prompt, queue))
            if self.mode == "early" and _tag(prompt) != "long":
                # Answered once its whole run went out on an open stream: every message
                # of it came before its id did.
                written = self._written.setdefault(event_id, asyncio.Event())
                await asyncio.wait_for(written.wait(), 10)
                await asyncio.sleep(self.gap)  # and read by the client before this answer
        writer.write(_response(200, {"event_id": event_id}))

    async def _run(self, event_id: str, prompt: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        """The event's messages: its estimation and start, a generating message a word, and
        its completion; the answer names the prompt's last word."""
        await queue.put({"msg": "estimation", "event_id": event_id, "rank": 0})
        await queue.put({"msg": "process_starts", "event_id": event_id})
        tag = _tag(prompt)
        if tag == "stall":  # no first word (until the call is cancelled)
            await asyncio.sleep(60)
        text = ""
        for index in range(WORDS * 4 if tag == "long" else WORDS):
            if tag == "halt" and index == 1:  # a first word, then nothing
                await asyncio.sleep(60)
            text = f"{text} {tag}{index}".strip()
            output = {"data": [text], "is_generating": True}
            await queue.put(
                {
                    "msg": "process_generating",
                    "event_id": event_id,
                    "output": output,
                    "success": True,
                }
            )
            await asyncio.sleep(self.gap)
        output = {"data": [text], "is_generating": False}
        await queue.put(
            {"msg": "process_completed", "event_id": event_id, "output": output, "success": True}
        )

    async def _stream(self, session: str, writer: asyncio.StreamWriter) -> None:
        queue = self._queues.get(session)
        if queue is None:
            writer.write(_response(404, {"detail": "Session not found."}))
            return
        writer.write(SSE_HEAD)
        while True:
            message = await queue.get()
            writer.write(f"data: {json.dumps(message)}\n\n".encode())
            await writer.drain()
            if message["msg"] == "process_generating":
                self._generated += 1
                if self.mode == "cut" and self._generated >= self.cut_after:
                    # Once; and as gradio does when a session's stream is lost, its events
                    # are dropped.
                    self.mode = "ok"
                    for event_id in self._pending.pop(session, set()):
                        run = self._runs.pop(event_id, None)
                        if run is not None:
                            run.cancel()
                    del self._queues[session]
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
            if message["msg"] == "process_completed":
                self._written.setdefault(message["event_id"], asyncio.Event()).set()
                pending = self._pending[session]
                pending.discard(message["event_id"])
                if not pending or self.mode == "closing":
                    writer.write(b'data: {"msg": "close_stream"}\n\n')
                    return

    async def _own_stream(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        writer.write(SSE_HEAD)
        text = ""
        for index in range(WORDS):
            text = f"{text} own{index}".strip()
            writer.write(f"event: generating\ndata: {json.dumps([text])}\n\n".encode())
        writer.write(f"event: complete\ndata: {json.dumps([text])}\n\n".encode())
