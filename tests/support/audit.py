"""Everything the gateway said during the test session, to prove the HF token never leaks.

Every gateway in the suite that has a token gets ``TOKEN``; every response a test reads and
every log record of the process (plus the output of gateway subprocesses) is kept here, and
the session-finish hook in ``tests/conftest.py`` scans whatever the selection recorded: a
leak fails the run, whichever tests were chosen.
"""

from __future__ import annotations

import logging

import httpx

TOKEN = "hf_TestSecret_9f3a7c1e5b2d4a60_doNotLeak"
CLIENT_AUTH = "Bearer browser-side-secret-7d1e"
API_KEY = "gw_TestApiKey_51c0e8a2_neverLogged"


class Audit:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.token_seen_upstream = False

    def add(self, text: str) -> None:
        self.texts.append(text)

    def leaks(self) -> list[str]:
        """The start of every recorded text that holds a secret."""
        secrets = (TOKEN, CLIENT_AUTH, API_KEY)
        return [text[:300] for text in self.texts if any(s in text for s in secrets)]

    def record_response(self, response: httpx.Response) -> None:
        head = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.add(f"{response.status_code}\n{head}\n{response.text}")


AUDIT = Audit()


class AuditLogHandler(logging.Handler):
    """Keeps every formatted log record, tracebacks included."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        AUDIT.add(self.format(record))
