"""Decoding an upstream's event stream: any chunking gives the same events, in linear time,
and an event has a size bound."""

from __future__ import annotations

import time

import pytest

from proxy.errors import UpstreamBadResponse
from proxy.sse import SSEDecoder

STREAM = (
    b'event: generating\r\ndata: ["a"]\r\n\r\n: a comment\n\nevent: complete\ndata: one\n'
    b"data: two\n\ndata: plain\r\r"
)
EVENTS = [("generating", '["a"]'), ("complete", "one\ntwo"), ("message", "plain")]


def decode(chunks: list[bytes]) -> list[tuple[str, str]]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def test_whole_stream() -> None:
    assert decode([STREAM]) == EVENTS


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_every_chunking_gives_the_same_events(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert decode(chunks) == EVENTS
    for cut in range(len(STREAM)):  # every single split point, CRLF halves included
        assert decode([STREAM[:cut], STREAM[cut:]]) == EVENTS


def test_an_event_without_end_is_refused_at_its_bound() -> None:
    decoder = SSEDecoder(max_event_bytes=1000)
    decoder.feed(b"data: " + b"x" * 900)
    with pytest.raises(UpstreamBadResponse) as raised:
        decoder.feed(b"x" * 200)
    assert raised.value.code == "upstream_event_too_large"
    with pytest.raises(UpstreamBadResponse):  # whole in one chunk with a boundary after it
        SSEDecoder(max_event_bytes=1000).feed(b"data: ok\n\ndata: " + b"y" * 2000)


def test_many_small_chunks_of_one_long_event_take_linear_time() -> None:
    """50,000 chunks of 16 bytes: re-splitting the buffer on each (the old decoder) took
    seconds; each chunk is now only kept."""
    decoder = SSEDecoder()
    started = time.process_time()
    decoder.feed(b"data: ")
    for _ in range(50_000):
        decoder.feed(b"abcdefghijklmnop")
    (event,) = decoder.feed(b"\n\n")
    assert len(event[1]) == 800_000
    assert time.process_time() - started < 1.0
