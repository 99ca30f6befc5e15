"""How the gateway maps its requests onto a Gradio app's API, from the app's ``/info``.

Pure functions over Gradio's JSON, shared by the gradio upstream and ``python -m proxy inspect``:
choose the endpoint, map our fields onto its parameters by name (then by label, then the app's
defaults), build the positional ``data`` list, and read a result back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from proxy.errors import UnknownModel, UpstreamAppError, UpstreamBadResponse
from proxy.generation import GenerationRequest

Source = Literal["prompt", "model", "max_new_tokens", "temperature", "top_p", "do_sample"]

# Our field -> the names Spaces commonly give the matching parameter, most specific first.
SYNONYMS: dict[Source, tuple[str, ...]] = {
    "prompt": ("inputs", "prompt", "message", "text", "query", "input"),
    "model": ("model", "model_name"),
    "max_new_tokens": ("max_new_tokens", "max_tokens", "max_length"),
    "temperature": ("temperature", "temp"),
    "top_p": ("top_p",),
    "do_sample": ("do_sample",),
}
_RANGE = re.compile(r"between\s+(-?[\d.]+)\s+and\s+(-?[\d.]+)")


@dataclass(frozen=True, slots=True)
class ParamPlan:
    """Where one positional argument of the endpoint comes from."""

    name: str
    label: str | None
    source: Source | None
    default: Any
    bounds: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None

    def describe(self) -> str:
        origin = f"<- {self.source}" if self.source else f"= app default {self.default!r}"
        extra = f" (clamped to {self.bounds[0]:g}..{self.bounds[1]:g})" if self.bounds else ""
        return f"{self.name}{f' [{self.label}]' if self.label else ''} {origin}{extra}"


@dataclass(frozen=True, slots=True)
class EndpointPlan:
    """A discovered endpoint: its name, the API prefix, and how to fill each parameter."""

    prefix: str
    api_name: str
    params: tuple[ParamPlan, ...]

    @property
    def call_path(self) -> str:
        return f"{self.prefix}/call{self.api_name}"


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def named_endpoints(info: Mapping[str, Any]) -> dict[str, Any]:
    endpoints = info.get("named_endpoints")
    if not isinstance(endpoints, dict):
        raise UpstreamBadResponse(
            "the upstream's /info has no named_endpoints: is it a Gradio app?"
        )
    return endpoints


def _existing(endpoints: Mapping[str, Any], requested: str, variable: str) -> str:
    """``requested`` when the app has it; else an error naming the setting and the choices."""
    if requested not in endpoints:
        raise UpstreamBadResponse(
            f"{variable}={requested} is not an endpoint of the upstream; "
            f"it has: {', '.join(sorted(endpoints)) or 'none'}"
        )
    return requested


def choose_endpoint(info: Mapping[str, Any], requested: str | None) -> str:
    """SPACE_API_NAME when set, else ``/predict``, else the only named endpoint."""
    endpoints = named_endpoints(info)
    names = sorted(endpoints)
    if requested is not None:
        return _existing(endpoints, requested, "SPACE_API_NAME")
    if "/predict" in endpoints:
        return "/predict"
    if len(names) == 1:
        return names[0]
    raise UpstreamBadResponse(
        "the upstream has several endpoints and none is /predict; set SPACE_API_NAME to one of: "
        + (", ".join(names) or "none")
    )


def choose_stream_endpoint(
    info: Mapping[str, Any], requested: str | None, *, main: str
) -> str | None:
    """SPACE_STREAM_API_NAME when set, else ``/predict_stream`` when the app has it, else None
    (the main endpoint's own ``generating`` events are streamed)."""
    endpoints = named_endpoints(info)
    if requested is not None:
        return _existing(endpoints, requested, "SPACE_STREAM_API_NAME")
    if "/predict_stream" in endpoints and main != "/predict_stream":
        return "/predict_stream"
    return None


def _bounds(kind: Mapping[str, Any]) -> tuple[float, float] | None:
    if "minimum" in kind and "maximum" in kind:
        return float(kind["minimum"]), float(kind["maximum"])
    found = _RANGE.search(str(kind.get("description", "")))
    return (float(found.group(1)), float(found.group(2))) if found else None


def plan_endpoint(info: Mapping[str, Any], api_name: str, *, prefix: str) -> EndpointPlan:
    """Map our fields onto the endpoint's parameters; raises if no parameter takes the prompt."""
    raw_params = named_endpoints(info)[api_name].get("parameters", [])
    keys = [
        (_normalise(str(p.get("parameter_name") or "")), _normalise(str(p.get("label") or "")))
        for p in raw_params
    ]
    sources: list[Source | None] = [None] * len(raw_params)
    for which in (0, 1):  # by parameter name first, then by component label
        for source, names in SYNONYMS.items():
            if source in sources:
                continue
            for synonym in names:
                hit = next(
                    (i for i, key in enumerate(keys) if key[which] == synonym and not sources[i]),
                    None,
                )
                if hit is not None:
                    sources[hit] = source
                    break
    if "prompt" not in sources:
        raise UpstreamBadResponse(
            f"cannot tell which parameter of {api_name} takes the prompt; "
            f"its parameters are: {', '.join(k[0] for k in keys) or 'none'}"
        )
    params = []
    for raw, taken in zip(raw_params, sources, strict=True):
        kind = raw.get("type") if isinstance(raw.get("type"), dict) else {}
        enum = kind.get("enum")
        params.append(
            ParamPlan(
                name=str(raw.get("parameter_name") or ""),
                label=raw.get("label"),
                source=taken,
                default=raw.get("parameter_default"),
                bounds=_bounds(kind) if kind.get("type") in ("number", "integer") else None,
                choices=tuple(str(c) for c in enum) if isinstance(enum, list) else None,
            )
        )
    return EndpointPlan(prefix=prefix, api_name=api_name, params=tuple(params))


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


def build_data(plan: EndpointPlan, req: GenerationRequest) -> list[Any]:
    """The positional ``data`` list for one call, in the endpoint's parameter order."""
    data: list[Any] = []
    for param in plan.params:
        match param.source:
            case "prompt":
                data.append(req.continued_prompt)
            case "model":
                data.append(_model_value(param, req))
            case "max_new_tokens":
                data.append(int(_clamp(req.max_new_tokens, param.bounds)))
            case "temperature":
                data.append(_clamp(req.temperature, param.bounds))
            case "top_p":
                data.append(_clamp(req.top_p, param.bounds))
            case "do_sample":
                data.append(req.do_sample)
            case None:
                data.append(param.default)
    return data


def result_text(payload: Any) -> str:
    """The generated text in a ``complete``/``generating`` payload: a list with one entry per
    output, each a plain string or a dict with ``generated_text``."""
    if isinstance(payload, list):
        if not payload:
            raise UpstreamBadResponse("the upstream returned no output")
        payload = payload[0]
        if isinstance(payload, list) and payload and isinstance(payload[0], dict):
            payload = payload[0]  # a pipeline-style [{"generated_text": ...}]
    if isinstance(payload, str):
        return payload
    if isinstance(payload, dict):
        text = payload.get("generated_text")
        if isinstance(text, str):
            return text
        if payload.get("error"):
            raise UpstreamAppError(f"the upstream reported: {str(payload['error'])[:500]}")
    raise UpstreamBadResponse(
        "the upstream's output is neither text nor an object with generated_text"
    )
