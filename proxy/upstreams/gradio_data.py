"""The ``data`` lists the gateway sends a Gradio endpoint, and the answer read from its outputs.

A **prompt** endpoint gets the rendered Llama 2 prompt. A **chat** endpoint gets the last user
message as plain text (the app applies its own template), the system prompt and the earlier
turns in its own parameters, or written before the message in plain words when it has none.
"""

from __future__ import annotations

from typing import Any

from proxy.core.generation import GenerationRequest
from proxy.core.prompts import Message, conversation, in_plain_words
from proxy.errors import UnknownModel, UpstreamAppError, UpstreamBadResponse, UpstreamRejected
from proxy.upstreams.gradio_app import FollowUp, HistoryFormat
from proxy.upstreams.gradio_plan import EndpointPlan, ParamPlan


def _model_value(param: ParamPlan, req: GenerationRequest) -> str:
    if param.choices is None:
        return req.model.name
    wanted = {req.model.name.lower(), req.model.hub_id.lower()}
    for choice in param.choices:
        if choice.lower() in wanted:
            return choice
    raise UnknownModel(
        f"model {req.model.name!r} is not served by this upstream; "
        f"it serves: {', '.join(param.choices)}",
        code="model_not_served",
    )


def _clamp(value: float, bounds: tuple[float, float] | None) -> float:
    if bounds is None:
        return value
    return min(max(value, bounds[0]), bounds[1])


def history_value(turns: tuple[Message, ...], form: HistoryFormat) -> list[Any]:
    """Earlier turns as a Chatbot of ``form`` takes them."""
    if form == "tuples":
        pairs: list[list[str | None]] = []
        for turn in turns:
            if turn.role == "user" or not pairs or pairs[-1][1] is not None:
                pairs.append([turn.content, None] if turn.role == "user" else [None, turn.content])
            else:
                pairs[-1][1] = turn.content
        return pairs
    if form == "parts":
        return [{"role": t.role, "content": [{"type": "text", "text": t.content}]} for t in turns]
    return [{"role": t.role, "content": t.content} for t in turns]


def prompt_value(plan: EndpointPlan, req: GenerationRequest) -> str:
    """The text the prompt parameter gets (what a reply that echoes it begins with)."""
    if plan.kind == "prompt":
        return req.continued_prompt
    if req.prefill:
        raise UpstreamRejected(
            f"the Space's chat endpoint {plan.api_name} cannot continue a broken answer "
            "(it applies its own template)",
            code="cannot_continue",
        )
    conv = conversation(req.messages, system=req.system)
    return in_plain_words(conv, system=not plan.takes("system"), history=not plan.takes("history"))


def build_data(plan: EndpointPlan, req: GenerationRequest, prompt: str | None = None) -> list[Any]:
    """The positional ``data`` list for one call, in the endpoint's parameter order;
    ``prompt`` is ``prompt_value(plan, req)`` when the caller has it already."""
    data: list[Any] = []
    for param in plan.params:
        match param.source:
            case "prompt":
                text = prompt_value(plan, req) if prompt is None else prompt
                data.append({"text": text, "files": []} if plan.multimodal else text)
            case "system":
                data.append(req.system or param.default)
            case "history":
                form = plan.history_format or "messages"
                data.append(history_value(conversation(req.messages, system="").history, form))
            case "model":
                data.append(_model_value(param, req))
            case "max_new_tokens":
                data.append(int(_clamp(req.max_new_tokens, param.bounds)))
            case "temperature":
                data.append(_clamp(req.temperature, param.bounds))
            case "top_p":
                data.append(_clamp(req.top_p, param.bounds))
            case "top_k":
                top_k = param.default if req.top_k is None else req.top_k
                data.append(param.default if top_k is None else int(_clamp(top_k, param.bounds)))
            case "repetition_penalty":
                penalty = req.repetition_penalty
                data.append(param.default if penalty is None else _clamp(penalty, param.bounds))
            case "do_sample":
                data.append(req.do_sample)
            case None:
                data.append(param.default)
    return data


def follow_data(follow: FollowUp, outputs: Any) -> list[Any]:
    """The follow-up event's ``data``: the first event's outputs where it reads them."""
    values = outputs if isinstance(outputs, list) else []
    return [
        values[source] if source is not None and source < len(values) else default
        for source, default in zip(follow.sources, follow.defaults, strict=True)
    ]


def _content_text(content: Any) -> str | None:
    """A chat message's content: a string, or gradio 6's parts (their text joined)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        return "".join(t for t in texts if isinstance(t, str))
    if isinstance(content, dict) and isinstance(content.get("text"), str):
        return str(content["text"])
    return None


def _history_answer(history: list[Any]) -> str | None:
    """The last assistant message of a Chatbot's value (messages or pairs)."""
    if not history:
        return ""
    last = history[-1]
    if isinstance(last, dict) and "role" in last:
        if last.get("role") != "assistant":
            return ""
        return _content_text(last.get("content"))
    if isinstance(last, list | tuple) and len(last) == 2:
        return _content_text(last[1]) if last[1] is not None else ""
    return None


def result_text(payload: Any, output: int = 0) -> str:
    """The generated text in a ``complete``/``generating`` payload: a list with one entry per
    output; the answer's entry is a string, a dict with ``generated_text`` or ``content``,
    a pipeline-style list of such dicts, or a Chatbot's history."""
    if isinstance(payload, list):
        if not payload:
            raise UpstreamBadResponse("the upstream returned no output")
        payload = payload[output] if output < len(payload) else payload[0]
        if isinstance(payload, list):
            answer = _history_answer(payload) if payload and _is_history(payload) else None
            if answer is not None:
                return answer
            if payload and isinstance(payload[0], dict):
                payload = payload[0]  # a pipeline-style [{"generated_text": ...}]
    if isinstance(payload, str):
        return payload
    if isinstance(payload, dict):
        text = payload.get("generated_text")
        if isinstance(text, str):
            return text
        content = _content_text(payload.get("content")) if "content" in payload else None
        if content is not None:  # a ChatMessage
            return content
        if payload.get("error"):
            raise UpstreamAppError(f"the upstream reported: {str(payload['error'])[:500]}")
    raise UpstreamBadResponse(
        "the upstream's output is neither text nor an object with generated_text"
    )


def _is_history(value: list[Any]) -> bool:
    last = value[-1]
    return (isinstance(last, dict) and "role" in last) or (
        isinstance(last, list | tuple) and len(last) == 2
    )
