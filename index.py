"""Vercel's Python entry point: ``app``, the gateway built from the function's environment.

Vercel finds this file by its name (``index.py`` at the project root) and serves the
top-level ``app``. The gateway starts on its first request; see the README's Vercel recipe.
"""

from proxy.serverless import function_app

app = function_app()
