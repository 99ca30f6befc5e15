"""The one redaction of secrets: every text that comes from an upstream or an exception
passes a ``Redactor`` before it reaches a response, ``/readyz`` or a log line.

It removes the configured secrets (the HF token, the API keys, the admin and metrics tokens,
the Redis password) and any ``Bearer <credential>``, since a Space may echo the headers it
received and a library may put a URL with its password in an exception. As a logging filter
(``logs.configure_logging`` installs it on the handler) it also covers exception tracebacks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

_BEARER = re.compile(r"(?i)\bbearer\s+[^\s\"',;]+")
REDACTED = "[redacted]"
# Shorter values are not secrets worth the name, and would blank out ordinary words.
MIN_SECRET = 8


class Redactor:
    """Replaces each secret and any Bearer credential with ``[redacted]``."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        found = {s for s in secrets if s and len(s) >= MIN_SECRET}
        # Longest first: a secret that contains another is removed whole.
        self.secrets = tuple(sorted(found, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _BEARER.sub("Bearer " + REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        """A logging filter: the record's message and exception text, redacted. Access-log
        lines are left alone: the gateway writes every field of them itself."""
        if "access" in record.__dict__:
            return True
        message = record.getMessage()
        clean = self(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, self(text)
        elif record.exc_text:
            record.exc_text = self(record.exc_text)
        return True
