"""bench.layers: how a py-spy sample is charged to a layer of the gateway."""

from __future__ import annotations

from bench.layers import LAYERS, layer_of, shares

LOOP = "run (/usr/lib/python3.11/asyncio/runners.py:118)"
MIDDLEWARE = "__call__ (/srv/app/proxy/web/instrument.py:90)"
LOG = "emit (/usr/lib/python3.11/logging/__init__.py:1113)"
KEY = "cache_key (/srv/app/proxy/core/cache.py:70)"
LOOKUP = "get (/srv/app/proxy/core/cache.py:190)"
IDLE = "_worker (/usr/lib/python3.11/concurrent/futures/thread.py:81)"


def test_the_innermost_recognised_frame_decides() -> None:
    assert layer_of([LOOP, MIDDLEWARE, LOG]) == "access log"  # not the middleware calling it
    assert layer_of([LOOP, MIDDLEWARE]) == "middleware, routing and handler"
    assert layer_of([LOOP]) == "server and event loop (the bare app's too)"
    writing = "send (/srv/app/proxy/serving/cycle.py:40)"  # uvicorn's send, in fewer steps
    assert layer_of([LOOP, MIDDLEWARE, writing]) == "server and event loop (the bare app's too)"
    assert layer_of([LOOP, MIDDLEWARE, KEY]) == "cache key"  # by the function, in cache.py
    assert layer_of([LOOP, MIDDLEWARE, LOOKUP]) == "cache lookup and store"
    assert layer_of(["f (/srv/elsewhere.py:1)"]) == "other"


def test_shares_count_samples_and_skip_idle_pool_workers() -> None:
    raw = f"{LOOP};{MIDDLEWARE};{LOG} 3\n{LOOP};{MIDDLEWARE} 1\n{IDLE} 50\n"
    found = shares(raw)
    assert set(found) == set(LAYERS)
    assert found["access log"] == 0.75
    assert found["middleware, routing and handler"] == 0.25
    assert found["other"] == 0
