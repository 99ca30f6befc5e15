"""What both fronts (the seed routes and the OpenAI-compatible ones) share."""

from __future__ import annotations

from proxy.core.generation import GenerationRequest, Usage, estimate_tokens
from proxy.replies import CompletionUsage


def usage_of(req: GenerationRequest, text: str, usage: Usage | None) -> CompletionUsage:
    """The usage to report for ``text``: the upstream's counts, or an estimate that says so."""
    usage = usage or Usage(estimate_tokens(req.prompt), estimate_tokens(text), estimated=True)
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "estimated": usage.estimated,
    }
