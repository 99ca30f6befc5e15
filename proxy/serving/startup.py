"""Start-up without the cyclic garbage collector's passes.

Importing the gateway and building its app allocate many objects (msgspec's decoders, the
dataclasses, the modules) and free few, so the collector's passes during start-up find almost
nothing (measured: about 12 ms of some 290 to import the gateway and uvicorn). They are
paused while the gateway starts, and what start-up built is frozen; ``serving`` then sets the
thresholds it serves with.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection inside; then what was built is frozen (kept out of every
    later collection) and the collector's state is as it was. Frozen, not left in the
    youngest generation: with the collector off, everything start-up allocated is there, and
    the first collection after it would walk it all (measured: 12 ms, 5 % of a cold start),
    to free almost nothing; Python's ``gc.freeze`` documentation describes this use.

    Unfrozen again as the interpreter exits, before its own teardown: CPython 3.11 tearing
    down with frozen objects crashed (measured: ``python -m proxy inspect`` against a local
    Gradio app ended in SIGSEGV after its report in about one run in seven; none in 80 since)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        atexit.unregister(gc.unfreeze)  # once, however often start-up ran
        atexit.register(gc.unfreeze)
        if enabled:
            gc.enable()
