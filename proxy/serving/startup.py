"""Start-up without the cyclic garbage collector's passes, and with the HTTP client's import
beside it.

Importing the gateway and building its app allocate many objects (msgspec's decoders, the
dataclasses, the modules) and free few, so the collector's passes during start-up find almost
nothing (measured: about 12 ms of some 290 to import the gateway and uvicorn). They are
paused while the gateway starts, and what start-up built is frozen; ``serving`` then sets the
thresholds it serves with. With an upstream, aiohttp is imported on a thread while the main
thread imports uvicorn and the gateway (``preload_http_client``).
"""

from __future__ import annotations

import atexit
import gc
import sys
import threading
import time
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


# Defined in aiohttp's connector module just before the two TLS contexts are built.
_TLS_STEP = "_make_ssl_context"


def preload_http_client() -> None:
    """Import aiohttp on a thread of its own, so that the gateway and uvicorn are imported
    while OpenSSL parses the CA bundle.

    Importing aiohttp builds two TLS contexts, reading the system's CA bundle twice (measured:
    about 35 of its 75 ms), and OpenSSL does that without holding the GIL. The rest of the
    import is Python code, which would only take turns with the main thread's imports. So the
    main thread waits, sleeping, until the thread reaches that point (aiohttp's
    ``_make_ssl_context`` is defined) or its import ends, whichever comes first, and goes on
    from there (measured: the first answer with a Space 20 ms sooner, 179 against 199 ms over
    nine interleaved starts). Without that wait, the thread's Python part takes turns with the
    main thread's and reaches the contexts about when the main thread has nothing left to do:
    nothing is gained (tried and measured so in an earlier session). If aiohttp changes, the
    worst case is the wait for the whole import, as without the thread. Whoever imports
    aiohttp next waits for this import (Python's per-module import lock) and gets its result;
    an import that fails here fails there again, where it matters."""
    if sys.modules.get("aiohttp") is not None:  # imported already (another app in this process)
        return
    thread = threading.Thread(target=_import_client, name="preload aiohttp", daemon=True)
    thread.start()
    while thread.is_alive() and not hasattr(sys.modules.get("aiohttp.connector"), _TLS_STEP):
        time.sleep(0.0005)


def _import_client() -> None:
    try:
        import aiohttp  # noqa: F401  # for the process: whoever imports it next gets it
    except Exception:  # the next import reports it, where it matters
        return
