"""Decoding an upstream's event stream: any chunking gives the same events, in linear time,
and an event has a size bound."""

from __future__ import annotations

import pytest

from proxy.errors import UpstreamBadResponse
from proxy.upstreams.sse import SSEDecoder

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


def test_a_chunk_without_a_boundary_is_kept_not_searched_again() -> None:
    """50,000 chunks of one long event: each is kept as it came (the old decoder joined and
    re-split the whole buffer on every chunk, quadratic in the event's size), and the event
    comes out whole at its end."""
    decoder = SSEDecoder()
    decoder.feed(b"data: ")
    for _ in range(50_000):
        assert decoder.feed(b"abcdefghijklmnop") == []
    assert len(decoder._pending) == 50_001  # nothing joined yet
    (event,) = decoder.feed(b"\n\n")
    assert event == ("message", "abcdefghijklmnop" * 50_000)
    assert decoder._pending == []
