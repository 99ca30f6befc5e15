"""An LLM gateway between browsers and a Llama 2 model on a Hugging Face Gradio Space.

``create_app`` and ``Settings`` are resolved on first use, so that ``python -m proxy`` reads
its settings before it imports the app: with an upstream, the HTTP client's import starts on
a thread of its own first (``serving/startup.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy._version import __version__

if TYPE_CHECKING:
    from proxy.app import create_app
    from proxy.config.settings import Settings

__all__ = ["Settings", "__version__", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from proxy.serving.startup import collector_paused

        with collector_paused():
            from proxy.app import create_app

        return create_app
    if name == "Settings":
        from proxy.config.settings import Settings

        return Settings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
