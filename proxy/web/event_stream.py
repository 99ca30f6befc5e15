"""A streamed response that stops when its client leaves, with one task of its own.

Starlette's ``StreamingResponse``, on an ASGI 2.3 server such as uvicorn, runs the body and a
listener for the client's disconnect in an anyio task group: per response a task group, two
tasks and their cancel scopes. ``EventStream`` streams in the request's own task and waits
for the disconnect in one plain asyncio task; when the client leaves, the streaming task is
cancelled, the body iterator closed at once (so the upstream call behind it ends now, not
when the collector finds it), and the cancellation absorbed, as the task group would absorb
it. A ``LastFrame`` from the body goes out with the end of the response (one write for the
last frame and the chunked body's end). Everything else (headers, frames, an ASGI 2.4
server's path) is Starlette's.
"""

from __future__ import annotations

import asyncio

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy.web.sse import LastFrame


class EventStream(StreamingResponse):
    """``StreamingResponse``, cancelled by its client's disconnect without a task group."""

    started = False  # the response's start was sent: too late for another status
    ended = False  # the end of the body was sent: a disconnect now is no departure

    async def stream_response(self, send: Send) -> None:
        headers = self.raw_headers
        self.started = True
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        async for chunk in self.body_iterator:
            if not isinstance(chunk, bytes | memoryview):
                chunk = chunk.encode(self.charset)
            if self.ended:
                raise RuntimeError("an event stream went on after its last frame")
            if type(chunk) is LastFrame:
                self.ended = True
                await send({"type": "http.response.body", "body": chunk, "more_body": False})
            else:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if not self.ended:
            self.ended = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        spec = scope.get("asgi", {}).get("spec_version", "2.0")
        if task is None or scope["type"] != "http" or self.background or _at_least_2_4(spec):
            await super().__call__(scope, receive, send)
            return
        left = False  # the client left before the last frame was sent
        done = False  # the last frame was sent: a disconnect now is the end of the response
        absorbed = False  # the cancellation that ``left`` caused was caught here

        async def listen() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            if not done and not self.ended:
                left = True
                task.cancel()

        listener = asyncio.get_running_loop().create_task(listen())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if not left:
                raise
            absorbed = True
            if task.uncancel() > 0:
                raise  # cancelled from elsewhere too (a shutdown, a deadline)
            await self._close_body()
        finally:
            done = True
            listener.cancel()
            if left and not absorbed:  # the body caught the cancellation: undo its count
                task.uncancel()

    async def _close_body(self) -> None:
        close = getattr(self.body_iterator, "aclose", None)
        if close is not None:
            await close()


def _at_least_2_4(spec: str) -> bool:
    """Whether an ASGI spec version says ``send`` raises once the client has gone."""
    major, _, minor = spec.partition(".")
    return (int(major), int(minor or 0)) >= (2, 4)
