"""How the gateway maps its requests onto a Gradio app's API, from its ``/config`` and ``/info``.

Pure functions over Gradio's JSON, shared by the gradio upstream and ``python -m proxy inspect``:
choose the endpoint and map our fields onto its parameters (by name, then label, then the
app's defaults) according to its kind (a **chat** endpoint applies its own template and takes
the message as plain text; a **prompt** endpoint takes the gateway's Llama 2 prompt).
``gradio_fields`` tells which parameter takes which of our fields; ``gradio_app`` reads what
the app says of its events (kind, answer, follow-up);
``gradio_data`` builds the ``data`` lists from a plan and reads results back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from msgspec import Struct
from msgspec.structs import force_setattr

from proxy.errors import UpstreamBadResponse
from proxy.upstreams.gradio_app import (
    AppAPI,
    FollowUp,
    HistoryFormat,
    Kind,
    answer_output,
    fn_index_of,
    follow_up,
    history_format,
    keeps_nothing,
    kind_of,
    mapping,
    no_api,
)
from proxy.upstreams.gradio_fields import GENERATION_FIELDS, Source, sources_of

_RANGE = re.compile(r"between\s+(-?[\d.]+)\s+and\s+(-?[\d.]+)")


class ParamPlan(Struct, frozen=True):
    """Where one positional argument of the endpoint comes from."""

    name: str
    label: str | None
    source: Source | None
    default: Any
    bounds: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    component: str = ""

    def describe(self, kind: Kind = "prompt", *, writes: str = "") -> str:
        """One line of ``inspect``: the parameter and what the gateway puts there."""
        if self.source == "prompt":
            origin = (
                f"<- the last user message, plain text{writes}"
                if kind == "chat"
                else "<- the prompt in Llama 2 chat format"
            )
        elif self.source == "system":
            origin = "<- the system message (the caller's, else the gateway's)"
        elif self.source == "history":
            origin = "<- the earlier turns"
        elif self.source:
            origin = f"<- {self.source}"
        else:
            origin = f"= app default {self.default!r}"
        extra = f" (clamped to {self.bounds[0]:g}..{self.bounds[1]:g})" if self.bounds else ""
        return f"{self.name}{f' [{self.label}]' if self.label else ''} {origin}{extra}"


class EndpointPlan(Struct, frozen=True):
    """A discovered endpoint: its name, kind, the API prefix, how to fill each parameter,
    which output holds the answer, and the follow-up event, if the answer comes from one."""

    prefix: str
    api_name: str
    params: tuple[ParamPlan, ...]
    kind: Kind = "prompt"
    why: str = ""
    output: int = 0
    history_format: HistoryFormat | None = None
    multimodal: bool = False
    follow: FollowUp | None = None
    # The event's index in the app (Gradio's fn_index): what POST {prefix}/cancel names.
    fn_index: int | None = None
    # The event keeps nothing in its session, and an abandoned call can be cancelled (POST
    # {prefix}/cancel names fn_index): its calls share one session (gradio_session.py).
    shares_session: bool = False
    # What follows from the fields, worked out once (each call asks); never given.
    taken: frozenset[Source] = frozenset()
    not_taken: tuple[Source, ...] = ()

    def __post_init__(self) -> None:
        taken = frozenset(p.source for p in self.params if p.source is not None)
        force_setattr(self, "taken", taken)
        # The generation fields this endpoint has no parameter for.
        force_setattr(self, "not_taken", tuple(f for f in GENERATION_FIELDS if f not in taken))

    @property
    def call_path(self) -> str:
        return self.path_of(self.api_name)

    def path_of(self, api_name: str) -> str:
        return f"{self.prefix}/call{api_name}"

    # The event whose output is the answer: the follow-up of a chain, else this one.

    @property
    def answer_path(self) -> str:
        return self.path_of(self.follow.api_name) if self.follow is not None else self.call_path

    @property
    def answer_output(self) -> int:
        return self.follow.output if self.follow is not None else self.output

    @property
    def answer_fn_index(self) -> int | None:
        return self.follow.fn_index if self.follow is not None else self.fn_index

    def takes(self, source: Source) -> bool:
        return source in self.taken

    def describe(self) -> list[str]:
        """``inspect``'s account of the plan: the kind, each parameter, what is not taken."""
        writes = ""
        if self.kind == "chat":
            missing = [
                what
                for what, source in (("the system prompt", "system"), ("earlier turns", "history"))
                if not self.takes(source)  # type: ignore[arg-type]
            ]
            if missing:
                writes = f" ({' and '.join(missing)} written before it in plain words)"
        lines = [f"kind: {self.kind}: {self.why}"]
        lines += [f"{i}. {p.describe(self.kind, writes=writes)}" for i, p in enumerate(self.params)]
        if self.follow is not None:
            lines.append(
                f"then {self.follow.api_name} in the same session; its output "
                f"{self.follow.output} is the answer"
            )
        if not self.takes("max_new_tokens"):
            lines.append("max_new_tokens: not taken; the gateway stops the answer there itself")
        ignored = [f for f in self.not_taken if f != "max_new_tokens"]
        if ignored:
            lines.append(
                f"not taken (the app's own values apply; replies name them in "
                f"X-Upstream-Ignored): {', '.join(ignored)}"
            )
        return lines


def _existing(app: AppAPI, requested: str, variable: str) -> str:
    """``requested`` when the app has it; else an error naming the setting and the choices."""
    if not app.endpoints:
        raise no_api(app)
    if requested not in app.endpoints:
        raise UpstreamBadResponse(
            f"{variable}={requested} is not an endpoint of the upstream; "
            f"it has: {', '.join(sorted(app.endpoints))}"
        )
    return requested


def choose_endpoint(app: AppAPI, requested: str | None) -> str:
    """SPACE_API_NAME when set; else ``/predict``; else the only endpoint that takes a
    prompt; else the only chat endpoint among them; else ``/chat`` (gradio 4 and 5 name a
    ChatInterface's so; gradio 6 names it after the function)."""
    if requested is not None:
        return _existing(app, requested, "SPACE_API_NAME")
    if not app.endpoints:
        raise no_api(app)
    usable = [name for name in sorted(app.endpoints) if sources_of(app, name)[0] is not None]
    if "/predict" in usable:
        return "/predict"
    if len(usable) == 1:
        return usable[0]
    chats = [name for name in usable if kind_of(app, name)[0] == "chat"]
    if len(chats) == 1:
        return chats[0]
    if "/chat" in usable:
        return "/chat"
    if not usable:
        raise UpstreamBadResponse(
            "none of the upstream's endpoints has a parameter the gateway can tell takes the "
            f"prompt; set SPACE_API_NAME to the one that does: {', '.join(sorted(app.endpoints))}"
        )
    raise UpstreamBadResponse(
        "the upstream has several endpoints that take a prompt and none is /predict or the "
        f"only chat; set SPACE_API_NAME to one of: {', '.join(usable)}"
    )


def choose_stream_endpoint(app: AppAPI, requested: str | None, *, main: str) -> str | None:
    """SPACE_STREAM_API_NAME when set, else ``/predict_stream`` when the app has it, else None
    (the main endpoint's own ``generating`` events are streamed)."""
    if requested is not None:
        return _existing(app, requested, "SPACE_STREAM_API_NAME")
    if "/predict_stream" in app.endpoints and main != "/predict_stream":
        return "/predict_stream"
    return None


def _bounds(kind: Mapping[str, Any]) -> tuple[float, float] | None:
    if "minimum" in kind and "maximum" in kind:
        return float(kind["minimum"]), float(kind["maximum"])
    found = _RANGE.search(str(kind.get("description", "")))
    return (float(found.group(1)), float(found.group(2))) if found else None


def plan_endpoint(app: AppAPI, api_name: str, *, prefix: str) -> EndpointPlan:
    """Map our fields onto the endpoint's parameters; raises if no parameter takes the
    prompt, or if its answer comes from a follow-up event that has no API."""
    raw_params = app.params(api_name)
    sources = sources_of(app, api_name)
    if len(sources) > len(raw_params):
        names = ", ".join(str(p.get("parameter_name")) for p in raw_params) or "none"
        raise UpstreamBadResponse(
            f"cannot tell which parameter of {api_name} takes the prompt; "
            f"its parameters are: {names}"
        )
    params = []
    form: HistoryFormat | None = None
    multimodal = False
    for raw, taken in zip(raw_params, sources, strict=True):
        schema = mapping(raw.get("type"))
        enum = schema.get("enum")
        component = str(raw.get("component", "")).lower()
        if taken == "history":
            form = history_format(raw)
        if taken == "prompt":
            multimodal = component == "multimodaltextbox"
        params.append(
            ParamPlan(
                name=str(raw.get("parameter_name") or ""),
                label=raw.get("label"),
                source=taken,
                default=raw.get("parameter_default"),
                bounds=_bounds(schema) if schema.get("type") in ("number", "integer") else None,
                choices=tuple(str(c) for c in enum) if isinstance(enum, list) else None,
                component=component,
            )
        )
    follow = follow_up(app, api_name)
    kind, why = kind_of(app, api_name)
    if follow is not None:
        kind, why = "chat", f"a Blocks chat: its answer comes from {follow.api_name} after it"
    dep = app.dependency(api_name)
    returns = app.endpoints[api_name].get("returns") or []
    output = answer_output(app, (dep or {}).get("outputs") or [], returns)
    fn_index = fn_index_of(dep)
    return EndpointPlan(
        prefix=prefix,
        api_name=api_name,
        params=tuple(params),
        kind=kind,
        why=why,
        output=output,
        history_format=form,
        multimodal=multimodal,
        follow=follow,
        fn_index=fn_index,
        shares_session=follow is None and fn_index is not None and keeps_nothing(app, dep),
    )
