"""Running the gateway: the process, its workers and the connections uvicorn accepts.

``proxy.serving:app_from_environment`` (the worker factory) and ``serve`` are the public entry
points of ``server.py``, resolved on first use: ``proxy/__init__.py`` imports ``startup.py``
from here before anything else is imported, with the garbage collector not yet paused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.serving.server import app_from_environment, serve

__all__ = ["app_from_environment", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from proxy.serving import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
