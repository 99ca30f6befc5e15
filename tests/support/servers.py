"""Real servers for tests: free loopback ports, uvicorn in a thread, waiting with a deadline."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import uvicorn

# Ports are drawn below the kernel's ephemeral range: a port there is never the local end of
# an outbound connection, which would take it between the draw and the server's bind.
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A loopback port nothing is bound to, never handed out before in this session.

    ``bind(0)`` can give the same port twice in a row: two servers of one test then share
    it, the second fails to bind, and the first answers for both (a CI run saw a second
    gateway's requests rate limited by the first).
    """
    floor = _ephemeral_floor()
    for _ in range(10_000):
        port = random.randrange(floor // 2, floor)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue  # bound by someone, or lingering after a close
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port below {floor}")


def _poll(condition: Callable[[], Any], deadline: float, timeout: float, what: str) -> Any:
    """``condition()``, or TimeoutError when it is falsy and ``deadline`` has passed."""
    result = condition()
    if not result and time.monotonic() > deadline:
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
    return result


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (result := _poll(condition, deadline, timeout, what)):
        time.sleep(0.02)
    return result


async def wait_for(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """``wait_until`` for a test running on an event loop: the loop keeps running between
    polls, so what the test waits on (a connection closing) can happen."""
    deadline = time.monotonic() + timeout
    while not (result := _poll(condition, deadline, timeout, what)):
        await asyncio.sleep(0.02)
    return result


class ThreadServer:
    """An ASGI app served by uvicorn on a free loopback port, in a thread of this process."""

    def __init__(self, app: Any, *, lifespan: str = "on") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, lifespan=lifespan
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_until(
            lambda: self.server.started or not self.thread.is_alive(),
            timeout=20,
            what="uvicorn to start",
        )
        if not self.server.started:
            raise RuntimeError("uvicorn failed to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


class LoopServer:
    """A raw asyncio server on a free loopback port, served from a thread with its own loop
    while the block runs; a subclass answers each connection in ``_handle``."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self._thread.start()
        started = asyncio.start_server(self._handle, "127.0.0.1", 0)
        self._server = asyncio.run_coroutine_threadsafe(started, self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        stop_loop_server(self._server, self._loop, self._thread)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


def stop_loop_server(
    server: asyncio.Server, loop: asyncio.AbstractEventLoop, thread: threading.Thread
) -> None:
    """Stop an asyncio server that runs on ``loop`` in ``thread``: its connections' tasks
    cancelled, the server closed, the loop stopped and closed."""

    async def stop() -> None:
        server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


class TcpRelay:
    """Forwards every connection on ``port`` to ``target_port`` on loopback, from a thread:
    a server that can be started late, on a port that refused connections until then."""

    def __init__(self, port: int, target_port: int) -> None:
        self.port = port
        self.target_port = target_port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except asyncio.CancelledError:
            pass  # the relay is stopping

    def __enter__(self) -> TcpRelay:
        self._thread.start()
        start = asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        stop_loop_server(self._server, self._loop, self._thread)
