"""The one redaction of secrets: every text that comes from an upstream or an exception
passes a ``Redactor`` before it reaches a response, ``/readyz`` or a log line.

It removes the configured secrets (the HF token, the API keys, the admin and metrics tokens,
the Redis password), raw, percent-encoded, JSON-escaped or base64-encoded (at any
alignment), and any ``Bearer <credential>``, since a Space may echo the headers it
received and a library may put a URL with its password in an exception. As a logging filter
(``logs.configure_logging`` installs it on the handler) it also covers exception tracebacks.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

_BEARER = re.compile(r"(?i)\bbearer\s+[^\s\"',;]+")
REDACTED = "[redacted]"
# Shorter values are not secrets worth the name, and would blank out ordinary words.
MIN_SECRET = 8


def _base64_cores(secret: bytes) -> set[str]:
    """What ``secret`` looks like inside any base64 text, at each of the three alignments it
    can have there (standard and URL-safe alphabets): the characters that depend on it alone."""
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode()
        first = -(-offset * 8 // 6)  # the first character made of the secret's bits only
        last = (offset + len(secret)) * 8 // 6  # past the last such character
        core = encoded[first:last]
        cores |= {core, core.replace("+", "-").replace("/", "_")}
    return cores


def encodings(secret: str) -> set[str]:
    """``secret`` as it may appear in a text: raw, percent-encoded, JSON-escaped, base64."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    forms |= _base64_cores(secret.encode())
    return {form for form in forms if len(form) >= MIN_SECRET}


class Redactor:
    """Replaces each secret (in its common encodings) and any Bearer credential with
    ``[redacted]``."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        found: set[str] = set()
        for secret in secrets:
            if secret and len(secret) >= MIN_SECRET:
                found |= encodings(secret)
        # Longest first: a secret that contains another is removed whole.
        self.secrets = tuple(sorted(found, key=len, reverse=True))

    def found_in(self, text: str) -> bool:
        """Whether ``text`` holds one of the secrets, in any of its encodings."""
        return any(secret in text for secret in self.secrets)

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
