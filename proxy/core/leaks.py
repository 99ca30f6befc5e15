"""The refusal of a reply that carries one of the gateway's own secrets.

A Space that echoes its request headers would otherwise hand out the HF token: such a reply
is never returned or cached, whole or streamed.
"""

from __future__ import annotations

import logging

from proxy.errors import UpstreamBadResponse
from proxy.observe.redaction import Redactor

logger = logging.getLogger("proxy.gateway")


class LeakCheck:
    """Raises UpstreamBadResponse when a reply's text holds one of ``secrets``."""

    def __init__(self, secrets: Redactor) -> None:
        self._secrets = secrets
        # How far back in a stream a secret could start: its longest encoding.
        self._reach = max(map(len, secrets.secrets))

    @classmethod
    def of(cls, secrets: Redactor | None) -> LeakCheck | None:
        """The check for ``secrets``, or None when there is nothing to look for."""
        return cls(secrets) if secrets is not None and secrets.secrets else None

    def whole(self, text: str) -> None:
        if self._secrets.found_in(text):
            raise _leaked()

    def tail(self, text: str, added: int) -> None:
        """Checks a stream's ``text`` after its last ``added`` characters came: only where a
        secret could end in them."""
        if self._secrets.found_in(text[-(added + self._reach) :]):
            raise _leaked()


def _leaked() -> UpstreamBadResponse:
    logger.warning("an upstream reply carried one of the gateway's secrets: refused")
    return UpstreamBadResponse(
        "the upstream's reply carried a secret of the gateway's; it was not returned",
        code="upstream_leaked_secret",
    )
