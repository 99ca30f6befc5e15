"""Start-up's objects are frozen, so the first collection after it does not walk them all."""

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
            built = [{"n": n} for n in range(1000)]
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
