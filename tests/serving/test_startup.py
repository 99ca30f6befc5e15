"""Start-up's objects are frozen, so the first collection after it does not walk them all; the
HTTP client is imported beside start-up."""

from __future__ import annotations

import gc

from proxy.serving.startup import collector_paused
from tests.support.processes import python_output


def test_what_start_up_built_is_frozen_and_the_collector_is_back() -> None:
    enabled = gc.isenabled()
    gc.enable()
    try:
        before = gc.get_freeze_count()
        with collector_paused():
            assert not gc.isenabled()
            built = [{"n": [n]} for n in range(1000)]  # tracked by the collector, as a list is
        assert gc.isenabled()
        assert gc.get_freeze_count() >= before + len(built)
        assert gc.get_count()[0] < len(built)  # nothing left for the youngest generation
    finally:
        gc.unfreeze()
        if not enabled:
            gc.disable()


def test_nothing_is_frozen_when_the_interpreter_tears_down() -> None:
    # A hook registered before the gateway's import runs after the gateway's own exit hooks.
    probe = (
        "import atexit, gc\n"
        "atexit.register(lambda: print('frozen at teardown:', gc.get_freeze_count()))\n"
        "import proxy\n"
        "proxy.create_app(proxy.Settings())\n"
        "assert gc.get_freeze_count() > 0\n"
    )
    assert python_output(probe).strip() == "frozen at teardown: 0"


def test_the_http_client_is_imported_on_a_thread_and_whole_when_next_imported() -> None:
    probe = (
        "import sys, threading\n"
        "from proxy.serving.startup import preload_http_client\n"
        "preload_http_client()\n"
        # Back as the thread reached aiohttp's TLS contexts, not at the end of its import.
        "print('aiohttp.connector' in sys.modules)\n"
        "import aiohttp.connector\n"
        "verified = aiohttp.connector._SSL_CONTEXT_VERIFIED\n"
        "print(verified is not None, aiohttp.ClientSession.__name__)\n"
    )
    assert python_output(probe).split() == ["True", "True", "ClientSession"]


def test_a_client_that_cannot_be_imported_fails_where_it_is_used_not_at_start_up() -> None:
    probe = (
        "import sys\n"
        "sys.modules['aiohttp'] = None  # what an import of a broken install does\n"
        "from proxy.serving.startup import preload_http_client\n"
        "preload_http_client()\n"
        "print('started')\n"
        "try:\n"
        "    import aiohttp\n"
        "except ImportError:\n"
        "    print('reported')\n"
    )
    assert python_output(probe, timeout=20).split() == ["started", "reported"]
