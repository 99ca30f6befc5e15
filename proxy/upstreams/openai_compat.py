"""The ``openai`` upstream: any OpenAI-compatible server (vLLM, TGI's Messages API, the HF
router, llama.cpp's server).

Chat models go to ``/v1/chat/completions`` with the messages themselves (the server applies
the model's chat template); base models go to ``/v1/completions`` with the plain prompt. Model
names map through UPSTREAM_MODEL_MAP, else the Hub id.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from typing import Any

from proxy.core.generation import Chunk, FinishReason, Generation, GenerationRequest, Usage
from proxy.core.prompts import HEALTH_SYSTEM_PROMPT
from proxy.errors import UpstreamAppError, UpstreamBadResponse
from proxy.observe.record import note_served_model
from proxy.upstreams.http import HTTPOptions
from proxy.upstreams.json_base import JSONUpstream


def _finish(reason: Any) -> FinishReason:
    return "length" if reason == "length" else "stop"


def _usage(data: Any) -> Usage | None:
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int):
        return Usage(prompt, completion)
    return None


class OpenAICompatUpstream(JSONUpstream):
    name = "openai"
    health_path = "/v1/models"

    def __init__(
        self,
        base_url: str,
        options: HTTPOptions,
        *,
        model_map: Mapping[str, str],
        system_prompt: str | None,
    ) -> None:
        # Accept the server's root or its /v1 base, as OpenAI clients do.
        super().__init__(base_url.removesuffix("/").removesuffix("/v1"), options)
        self._model_map = dict(model_map)
        self._system_prompt = system_prompt or HEALTH_SYSTEM_PROMPT

    def _route_and_body(
        self, req: GenerationRequest, *, stream: bool
    ) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self._model_map.get(req.model.name, req.model.hub_id),
            "max_tokens": req.max_new_tokens,
            "temperature": req.temperature if req.do_sample else 0.0,
            "top_p": req.top_p if req.do_sample else 1.0,
            "stream": stream,
        }
        if stream:  # the server's own counts, in a chunk after the finish
            body["stream_options"] = {"include_usage": True}
        if req.stop:
            body["stop"] = list(req.stop)
        # vLLM's and TGI's extensions, sent only when asked for: OpenAI itself refuses them.
        if req.top_k is not None:
            body["top_k"] = req.top_k
        if req.repetition_penalty is not None:
            body["repetition_penalty"] = req.repetition_penalty
        if not req.model.chat:
            return "/v1/completions", {**body, "prompt": req.continued_prompt}
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        if messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self._system_prompt})
        if req.prefill:
            # Continue the partial answer (vLLM's assistant prefill): only for a server
            # declared assistant_prefill, which the router alone asks to continue.
            messages.append({"role": "assistant", "content": req.prefill})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        return "/v1/chat/completions", {**body, "messages": messages}

    @staticmethod
    def _choice(data: Any) -> dict[str, Any]:
        choices = data.get("choices") if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("error"):
            raise UpstreamAppError(f"the upstream reported: {str(data['error'])[:500]}")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise UpstreamBadResponse("the upstream's answer has no choices")
        return choices[0]

    async def generate(self, req: GenerationRequest) -> Generation:
        path, body = self._route_and_body(req, stream=False)
        answer = await self.post_json(path, body)
        choice = self._choice(answer)
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        if not isinstance(text, str):
            raise UpstreamBadResponse("the upstream's answer has no text")
        model = _reported_model(answer) or req.model.name
        note_served_model(model)
        return Generation(
            text, model, self.name, _finish(choice.get("finish_reason")), _usage(answer)
        )

    async def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Text chunks, then one last chunk with the finish reason and the server's usage,
        read on past the finish chunk to the usage chunk and ``[DONE]``."""
        path, body = self._route_and_body(req, stream=True)
        finish: FinishReason | None = None
        usage: Usage | None = None
        noted = False
        async with aclosing(self.post_events(path, body)) as events:
            async for event in events:
                if not noted and (model := _reported_model(event)):
                    note_served_model(model)  # before the first chunk: the route names it
                    noted = True
                usage = _usage(event) or usage
                if isinstance(event, dict) and not event.get("choices") and not event.get("error"):
                    continue  # the usage-only chunk
                choice = self._choice(event)
                if finish is not None:
                    continue  # past the finish, only the usage matters
                delta = choice.get("delta")
                text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
                if text:
                    yield Chunk(str(text))
                if choice.get("finish_reason"):
                    finish = _finish(choice["finish_reason"])
        if finish is not None:
            yield Chunk("", finish_reason=finish, usage=usage)


def _reported_model(data: Any) -> str | None:
    """The model the server says it served (OpenAI a dated snapshot, vLLM its served name)."""
    model = data.get("model") if isinstance(data, dict) else None
    return model[:200] if isinstance(model, str) and model.strip() else None
