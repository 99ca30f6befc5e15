"""A Space's ``error`` event as the gateway's error: busy, out of GPU quota, or its own.

ZeroGPU Spaces (the ``spaces`` package) raise ``gr.Error(message, title=...)``, which Gradio
sends as ``{"error": message, "title": title, ...}``. They are classified by title and message
together, as Gradio's own client does: "No GPU was available" is a busy GPU (503), a spent
quota in any of the package's wordings (quota, the Space's "GPU limit", the runs limit,
pending credits) is a 429 whose Retry-After is the wait the Space names ("Try again in
0:05:22" is 322 s).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from proxy.errors import (
    UpstreamAppError,
    UpstreamBusy,
    UpstreamFailure,
    UpstreamQuotaExceeded,
    UpstreamRejected,
)

# "Try again in 0:05:22", "retry in 1 day, 2:03:04": a Python timedelta as str() writes it.
QUOTA_WAIT = re.compile(
    r"(?:retry|try again) in (?:(\d+) days?, )?(\d+):(\d{1,2}):(\d{1,2})", re.IGNORECASE
)
QUOTA_WORDS = re.compile(r"quota|gpu limit|runs limit|pending credits")
BUSY_WORDS = re.compile(r"queue is full|too many requests|no gpu|gpu is busy|server is busy")
# When a quota message names no wait: come back in a minute.
QUOTA_DEFAULT_WAIT = 60
# No GPU free on ZeroGPU's side: a short wait, answered at once (a retry queues 60 s again).
NO_GPU_WAIT = 30


def named_wait(text: str) -> int | None:
    """The seconds a "try again in H:MM:SS" names, or None."""
    found = QUOTA_WAIT.search(text)
    if not found:
        return None
    days, hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def app_error(payload: Any, redact: Callable[[str], str]) -> UpstreamFailure:
    """The gateway's error for a Space's ``error`` event ``payload``."""
    message = payload.get("error") if isinstance(payload, dict) else payload
    title = payload.get("title") if isinstance(payload, dict) else None
    if not message and not title:
        return UpstreamAppError(
            "the upstream app raised an error without details "
            "(its owner can launch it with show_error=True)"
        )
    text = redact(str(message or ""))[:500]
    heading = redact(str(title or ""))[:100]
    said = f"{heading}: {text}" if heading and text else heading or text
    lowered = f"{heading} {text}".lower()
    if "no gpu was available" in lowered:
        error: UpstreamFailure = UpstreamBusy(
            f"the Space found no free GPU ({said}); retry shortly", retry_after=NO_GPU_WAIT
        )
        error.upstream_wait = float(NO_GPU_WAIT)
        return error
    if "illegal duration" in lowered or "larger than the maximum allowed" in lowered:
        return UpstreamRejected(
            f"the Space asks ZeroGPU for more GPU time than its account allows ({said}); "
            "ask for fewer max_new_tokens"
        )
    if QUOTA_WORDS.search(lowered):
        wait = named_wait(text)
        wait = max(1, wait) if wait else QUOTA_DEFAULT_WAIT
        error = UpstreamQuotaExceeded(
            f"the Space's GPU quota is spent ({said}); retry after Retry-After",
            retry_after=wait,
        )
        error.upstream_wait = float(wait)  # never waited out here: minutes, not seconds
        return error
    if BUSY_WORDS.search(lowered):
        return UpstreamBusy(f"the upstream is busy: {said}; retry later", retry_after=10)
    return UpstreamAppError(f"the upstream reported: {said}")
