"""Start-up without the cyclic garbage collector's passes.

Importing the gateway and building its app allocate many objects (pydantic's schemas, the
dataclasses, the modules) and free few, so the collector's passes during start-up find almost
nothing (measured: about 12 ms of some 290 to import the gateway and uvicorn). They are
paused while the gateway starts; ``serving`` then freezes what start-up built and sets the
thresholds it serves with.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection inside; the collector's state as it was afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
