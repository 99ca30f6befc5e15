"""Which browser origins ALLOWED_ORIGINS lets in: one pattern, read by the guard (a
disallowed ``Origin`` is refused) and by CORS (an allowed one is answered)."""

from __future__ import annotations

import re


def origin_matcher(origins: tuple[str, ...]) -> re.Pattern[str] | None:
    """A pattern for the allowed origins (``host:*`` is any port), or None for ``*``."""
    if "*" in origins:
        return None
    parts = []
    for origin in origins:
        if origin.endswith(":*"):
            parts.append(re.escape(origin.removesuffix(":*")) + r"(?::\d{1,5})?")
        else:
            parts.append(re.escape(origin))
    return re.compile("|".join(parts))
