"""One generation fanned out to its listeners: a late listener's catch-up, the same end for
all, the generation going on while anyone listens and cancelled when nobody does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from proxy.core.generation import Chunk
from proxy.core.stream_flights import StreamFlights
from proxy.errors import UpstreamDisconnected


class Source:
    """A stream of chunks released one by one by the test; records whether it was closed."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Chunk | Exception | None] = asyncio.Queue()
        self.closed = False

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        try:
            while (item := await self.queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.closed = True


async def collect(chunks: AsyncGenerator[Chunk, None]) -> list[Chunk]:
    return [chunk async for chunk in chunks]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_late_listener_gets_the_text_so_far_as_one_chunk_then_the_live_ones() -> None:
    source = Source()
    flight = StreamFlights().begin("k", source.chunks())
    first = asyncio.create_task(collect(flight.listen()))
    await settle()  # the first listener is waiting before anything arrives
    for piece in ("Rest ", "well "):
        source.queue.put_nowait(Chunk(piece))
    await settle()
    late = asyncio.create_task(collect(flight.listen()))
    await settle()
    source.queue.put_nowait(Chunk("and drink water.", finish_reason="stop"))
    source.queue.put_nowait(None)
    leader, follower = await first, await late
    assert [c.text for c in leader] == ["Rest ", "well ", "and drink water."]
    assert [c.text for c in follower] == ["Rest well ", "and drink water."]
    assert follower[-1].finish_reason == leader[-1].finish_reason == "stop"


async def test_a_listener_of_a_finished_flight_gets_it_whole() -> None:
    source = Source()
    flights = StreamFlights()
    flight = flights.begin("k", source.chunks())
    listening = asyncio.create_task(collect(flight.listen()))
    source.queue.put_nowait(Chunk("All ", finish_reason=None))
    source.queue.put_nowait(Chunk("done.", finish_reason="length"))
    source.queue.put_nowait(None)
    await listening
    assert flights.get("k") is None  # a finished flight takes no new listener
    (whole,) = await collect(flight.listen())
    assert (whole.text, whole.finish_reason) == ("All done.", "length")


async def test_every_listener_gets_the_same_error_and_no_end() -> None:
    source = Source()
    flight = StreamFlights().begin("k", source.chunks())
    listeners = [asyncio.create_task(collect(flight.listen())) for _ in range(3)]
    source.queue.put_nowait(Chunk("Rest well and"))
    await settle()
    broken = UpstreamDisconnected("the upstream closed the stream")
    source.queue.put_nowait(broken)
    for listener in listeners:
        with pytest.raises(UpstreamDisconnected) as caught:
            await listener
        assert caught.value is broken


async def test_the_generation_goes_on_while_anyone_listens_and_stops_when_nobody_does() -> None:
    source = Source()
    flights = StreamFlights()
    flight = flights.begin("k", source.chunks())
    leader, follower = flight.listen(), flight.listen()
    source.queue.put_nowait(Chunk("one "))
    assert (await anext(leader)).text == "one "
    assert (await anext(follower)).text == "one "
    await leader.aclose()  # the first client leaves
    source.queue.put_nowait(Chunk("two "))
    assert (await anext(follower)).text == "two "
    assert not source.closed and flights.get("k") is flight
    await follower.aclose()  # the last one leaves: the upstream call is cancelled at once
    assert flights.get("k") is None  # and nobody new joins a flight being stopped
    await flight.wait_stopped()
    assert source.closed


async def test_a_listener_cancelled_while_waiting_leaves_the_others_waiting() -> None:
    source = Source()
    flight = StreamFlights().begin("k", source.chunks())
    leaving = asyncio.create_task(collect(flight.listen()))
    staying = asyncio.create_task(collect(flight.listen()))
    json_listener = asyncio.create_task(flight.outcome())
    await settle()  # all three wait for the first chunk
    leaving.cancel()  # the client left (its task is cancelled) while the others wait
    await settle()
    assert leaving.cancelled() and not staying.done() and not json_listener.done()
    source.queue.put_nowait(Chunk("Sleep ", finish_reason=None))
    source.queue.put_nowait(Chunk("early.", finish_reason="stop"))
    source.queue.put_nowait(None)
    assert [c.text for c in await staying] == ["Sleep ", "early."]
    assert (await json_listener).text == "Sleep early."
    assert not source.closed or flight.done


async def test_a_json_listener_gets_the_whole_text() -> None:
    source = Source()
    flight = StreamFlights().begin("k", source.chunks())
    outcome = asyncio.create_task(flight.outcome())
    source.queue.put_nowait(Chunk("Drink "))
    source.queue.put_nowait(Chunk("water.", replace=False, finish_reason="stop"))
    source.queue.put_nowait(None)
    result = await outcome
    assert (result.text, result.finish, result.error) == ("Drink water.", "stop", None)


async def test_another_instance_following_keeps_a_flight_without_listeners_going() -> None:
    source = Source()
    flight = StreamFlights().begin("k", source.chunks())
    followed = True

    async def followed_elsewhere() -> bool:
        return followed

    flight.followed_elsewhere = followed_elsewhere
    listener = flight.listen()
    source.queue.put_nowait(Chunk("one "))
    await anext(listener)
    await listener.aclose()
    await asyncio.sleep(0.1)
    assert not source.closed  # someone elsewhere still reads it
    followed = False
    async with asyncio.timeout(2):
        await flight.wait_stopped()
    assert source.closed
