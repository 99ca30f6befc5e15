"""An LLM gateway between browsers and a Llama 2 model on a Hugging Face Gradio Space."""

from proxy._version import __version__
from proxy.serving.startup import collector_paused

with collector_paused():
    from proxy.app import create_app
    from proxy.config.settings import Settings

__all__ = ["Settings", "__version__", "create_app"]
