"""An upstream response's body read chunk by chunk, every wait bounded by a deadline.

``asyncio.timeout`` around each read that waits costs a ``Timeout``, a task lookup and a timer
armed and cancelled per chunk of a stream. A deadline does not move between reads, so one timer
per response and deadline does the same: armed when a read first waits for that deadline,
moved when the caller's deadline changes (the first token's, then the call's), cancelled when
the body is released. A read still waiting when it fires fails with ``ReadExpired``; a timer
that fires between reads is armed again by the next read that has to wait, so that read fails
at once; what has already arrived is returned either way, as before.
"""

from __future__ import annotations

import asyncio

import aiohttp


class ReadExpired(Exception):
    """A read of an upstream body waited past its deadline."""

    def __init__(self, deadline: float) -> None:
        super().__init__(f"no data before loop time {deadline:.3f}")


class BodyReader:
    """Reads ``resp``'s body for one caller; ``release`` ends it (and its timer)."""

    __slots__ = ("resp", "_content", "_timer", "_armed_for", "_waiting")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self._content = resp.content
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None
        self._waiting = False

    async def read(self, wait_until: float | None) -> bytes:
        """The next chunk (``b""`` at the body's end), waiting at most until ``wait_until``
        (loop time; None: unbounded here); raises ReadExpired past it, or the error the
        stream met."""
        content = self._content
        chunk = content.read_nowait()
        if chunk or content.at_eof():
            return chunk
        if wait_until is None:
            return await content.readany()
        if wait_until != self._armed_for:
            self._arm(wait_until)
        self._waiting = True
        try:
            return await content.readany()
        finally:
            self._waiting = False

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_for = when
        self._timer = asyncio.get_running_loop().call_at(when, self._expire)

    def _expire(self) -> None:
        when = self._armed_for
        self._timer = self._armed_for = None
        if self._waiting and when is not None:
            # The call is over: the read waiting now fails, and so would every later one.
            self._content.set_exception(ReadExpired(when))

    def release(self) -> None:
        """Hand the connection back (or close it when the body was not read to its end)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._armed_for = None
        self.resp.release()
