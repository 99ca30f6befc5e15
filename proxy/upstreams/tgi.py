"""The ``tgi`` upstream: text-generation-inference and HF Inference Endpoints.

``POST /generate`` answers ``{"generated_text", "details": {"finish_reason",
"generated_tokens"}}``; ``POST /generate_stream`` sends ``data:{"token": {"text", "special"},
"generated_text", "details"}`` events, the last with the whole text. Errors are
``{"error": "...", "error_type": "..."}`` with 422 (validation), 424 (generation) or 429
(overloaded), in a status or as a stream event.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from proxy.core.generation import (
    Chunk,
    FinishReason,
    Generation,
    GenerationRequest,
    Usage,
    estimate_tokens,
)
from proxy.errors import UpstreamAppError, UpstreamBadResponse
from proxy.upstreams.json_base import JSONUpstream


def _finish(details: Any) -> FinishReason:
    reason = details.get("finish_reason") if isinstance(details, dict) else None
    return "length" if reason == "length" else "stop"


def _usage(req: GenerationRequest, details: Any) -> Usage | None:
    tokens = details.get("generated_tokens") if isinstance(details, dict) else None
    if not isinstance(tokens, int):
        return None
    # TGI reports generated tokens only; the prompt's count is estimated.
    return Usage(estimate_tokens(req.prompt), tokens, estimated=True)


class TGIUpstream(JSONUpstream):
    name = "tgi"
    health_path = "/health"

    def body(self, req: GenerationRequest) -> dict[str, Any]:
        parameters: dict[str, Any] = {
            "max_new_tokens": req.max_new_tokens,
            "do_sample": req.do_sample,
            "return_full_text": False,
            "details": True,
        }
        # TGI rejects temperature 0 and top_p 1.0; greedy decoding needs neither.
        if req.do_sample:
            parameters["temperature"] = req.temperature
            if req.top_p < 1:
                parameters["top_p"] = req.top_p
        if req.do_sample and req.top_k is not None:
            parameters["top_k"] = req.top_k
        if req.repetition_penalty is not None:
            parameters["repetition_penalty"] = req.repetition_penalty
        if req.stop:
            parameters["stop"] = list(req.stop)
        return {"inputs": req.continued_prompt, "parameters": parameters}

    async def generate(self, req: GenerationRequest) -> Generation:
        answer = await self.post_json("/generate", self.body(req))
        if isinstance(answer, list) and answer:
            answer = answer[0]  # HF Inference API style: [{"generated_text": ...}]
        if not isinstance(answer, dict) or not isinstance(answer.get("generated_text"), str):
            raise UpstreamBadResponse("the upstream's answer has no generated_text")
        details = answer.get("details")
        return Generation(
            answer["generated_text"],
            req.model.name,
            self.name,
            _finish(details),
            _usage(req, details),
        )

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        async with aclosing(self.post_events("/generate_stream", self.body(req))) as events:
            async for event in events:
                if not isinstance(event, dict):
                    raise UpstreamBadResponse("the upstream sent an event that is not an object")
                if event.get("error"):
                    raise UpstreamAppError(f"the upstream reported: {str(event['error'])[:500]}")
                token = event.get("token") or {}
                text = "" if token.get("special") else str(token.get("text") or "")
                details = event.get("details")
                if details is not None:
                    yield Chunk(text, finish_reason=_finish(details), usage=_usage(req, details))
                    return
                if text:
                    yield Chunk(text)
