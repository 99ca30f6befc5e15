"""The core: a GenerationRequest in, a reply out, HTTP-free (cache, single flight, budgets, stops).

It calls upstreams only through the seam it owns, ``upstream.py``.
"""
