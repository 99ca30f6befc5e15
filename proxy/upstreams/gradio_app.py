"""What a Gradio app's ``/info`` and ``/config`` say of its events: the public endpoints and
their parameters, each event's components, and from them an endpoint's kind (a chat that
applies its own template, or a raw prompt), the output that holds its answer, the follow-up
event the page runs for that answer (``user`` then ``.then(bot)``), and how a ``Chatbot``
takes the history. Shapes measured on gradio 6.31 (and gradio 4 and 5 where they differ).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from msgspec import Struct

from proxy.errors import UpstreamBadResponse

Kind = Literal["chat", "prompt"]
# How a Chatbot takes the history: gradio 6 messages with content parts, gradio 5 messages
# with string content, gradio 4's [[user, assistant], ...] pairs.
HistoryFormat = Literal["parts", "messages", "tuples"]
TEXT_COMPONENTS = frozenset({"textbox", "multimodaltextbox"})


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


class FollowUp(Struct, frozen=True):
    """The event the page runs after the chosen one, in the same session, for the answer:
    each of its API inputs is one of the first event's outputs (by index) or its default."""

    api_name: str
    sources: tuple[int | None, ...]
    defaults: tuple[Any, ...]
    output: int
    fn_index: int | None = None


class AppAPI(Struct, frozen=True):
    """What an app's ``/info`` and ``/config`` say of its events: the public endpoints and
    their parameters, and each event's components (for its kind, outputs and follow-ups)."""

    endpoints: Mapping[str, Any]
    dependencies: tuple[Mapping[str, Any], ...] = ()
    components: Mapping[int, str] | None = None
    values: Mapping[int, Any] | None = None
    mode: str = ""
    events: int = 0
    # The config's connect_heartbeat: the app keeps something per session (gr.State, an
    # unload event), so its page holds a heartbeat open for it.
    heartbeat: bool = False

    @classmethod
    def of(cls, info: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> AppAPI:
        endpoints = info.get("named_endpoints")
        if not isinstance(endpoints, dict):
            raise UpstreamBadResponse(
                "the upstream's /info has no named_endpoints: is it a Gradio app?"
            )
        config = config or {}
        deps = config.get("dependencies")
        deps = tuple(d for d in deps if isinstance(d, dict)) if isinstance(deps, list) else ()
        components: dict[int, str] = {}
        values: dict[int, Any] = {}
        for component in config.get("components") or ():
            if isinstance(component, dict) and isinstance(component.get("id"), int):
                components[component["id"]] = str(component.get("type", "")).lower()
                props = component.get("props")
                values[component["id"]] = props.get("value") if isinstance(props, dict) else None
        mode = str(config.get("mode") or "")
        heartbeat = config.get("connect_heartbeat") is True
        return cls(endpoints, deps, components, values, mode, len(deps), heartbeat)

    def dependency(self, api_name: str) -> Mapping[str, Any] | None:
        name = api_name.lstrip("/")
        return next((d for d in self.dependencies if d.get("api_name") == name), None)

    def component(self, ident: Any) -> str:
        return (self.components or {}).get(ident, "") if isinstance(ident, int) else ""

    def params(self, api_name: str) -> list[Mapping[str, Any]]:
        raw = self.endpoints[api_name].get("parameters", [])
        return [p for p in raw if isinstance(p, dict)] if isinstance(raw, list) else []


def no_api(app: AppAPI) -> UpstreamBadResponse:
    events = f"all {app.events} of its events are" if app.events else "its events are"
    return UpstreamBadResponse(
        f"the upstream app has no public API: {events} registered with api_name=False "
        "(api_visibility='private'), so no client can call them; its owner can give the chat "
        "event an api_name (e.g. .click(fn, ..., api_name='chat'))",
        code="upstream_no_api",
    )


def is_chat_interface(app: AppAPI, api_name: str) -> bool:
    """A ChatInterface's API event: (message, history state, *additional inputs) in,
    (response, history state) out, in gradio 4 to 6 alike."""
    dep = app.dependency(api_name)
    if dep is None:
        return False
    inputs, outputs = dep.get("inputs") or [], dep.get("outputs") or []
    return (
        len(inputs) >= 2
        and app.component(inputs[0]) in TEXT_COMPONENTS
        and app.component(inputs[1]) == "state"
        and bool(outputs)
        and app.component(outputs[-1]) == "state"
    )


def keeps_nothing(app: AppAPI, dep: Mapping[str, Any] | None) -> bool:
    """Whether the event ``dep`` can share a session with other calls: the app keeps nothing
    per session and the event has no state among its inputs and outputs."""
    if dep is None or app.heartbeat:
        return False
    ids = [*(dep.get("inputs") or ()), *(dep.get("outputs") or ())]
    return all(app.component(i) not in ("state", "") for i in ids)


def answer_output(app: AppAPI, outputs: Sequence[Any], returns: Sequence[Any]) -> int:
    """The index of the output holding the answer: a Chatbot when there is one (a Blocks
    chat also clears its textbox), else the first output that is not a state."""
    kinds = [app.component(o) for o in outputs]
    if not kinds:  # no /config for this event: /info's returns (states not listed)
        kinds = [str(r.get("component", "")).lower() for r in returns if isinstance(r, dict)]
    if "chatbot" in kinds:
        return kinds.index("chatbot")
    return next((i for i, kind in enumerate(kinds) if kind != "state"), 0)


def follow_up(app: AppAPI, api_name: str) -> FollowUp | None:
    """The event that follows ``api_name`` (``.then``/``.success``) taking one of its
    outputs, as the page runs it for the answer; raises when that event has no API."""
    dep = app.dependency(api_name)
    if dep is None:
        return None
    outputs = list(dep.get("outputs") or [])
    followers = [
        d
        for d in app.dependencies
        if d.get("trigger_after") == dep.get("id")
        and d.get("backend_fn", True)
        and set(d.get("inputs") or []) & set(outputs)
        and d.get("outputs")
    ]
    if not followers:
        return None
    followers.sort(key=lambda d: "chatbot" not in [app.component(o) for o in d["outputs"]])
    follower = followers[0]
    name = f"/{follower.get('api_name')}"
    if follower.get("api_visibility") == "private" or follower.get("api_name") in (None, False):
        raise UpstreamBadResponse(
            f"the answer of {api_name} comes from the event that follows it ({name}, "
            f"#{follower.get('id')}), which has no API (api_name=False): the Space's owner can "
            "give it an api_name, or set SPACE_API_NAME to an endpoint that answers by itself",
            code="upstream_no_api",
        )
    inputs = [i for i in follower.get("inputs") or [] if app.component(i) != "state"]
    return FollowUp(
        api_name=name,
        sources=tuple(outputs.index(i) if i in outputs else None for i in inputs),
        defaults=tuple((app.values or {}).get(i) for i in inputs),
        output=answer_output(app, follower["outputs"], ()),
        fn_index=fn_index_of(follower),
    )


def fn_index_of(dep: Mapping[str, Any] | None) -> int | None:
    """An event's index in the app (Gradio's fn_index), when its config gives one."""
    index = dep.get("id") if dep is not None else None
    return index if isinstance(index, int) else None


def kind_of(app: AppAPI, api_name: str) -> tuple[Kind, str]:
    if is_chat_interface(app, api_name):
        return "chat", "a ChatInterface: it applies its own template; its API takes no history"
    params = app.params(api_name)
    if any(str(p.get("component", "")).lower() == "chatbot" for p in params):
        return "chat", "a chat event: it takes the history in a Chatbot"
    dep = app.dependency(api_name)
    if dep is not None and app.mode == "chat_interface" and dep.get("api_visibility") == "public":
        return "chat", "the endpoint of a ChatInterface app"
    return "prompt", "a raw prompt: the gateway applies the Llama 2 template"


def history_format(param: Mapping[str, Any]) -> HistoryFormat:
    """How this Chatbot parameter takes the history, from its JSON schema."""
    schema: Mapping[str, Any] = mapping(param.get("type"))
    defs: Mapping[str, Any] = mapping(schema.get("$defs"))
    for definition in defs.values():
        props = definition.get("properties") if isinstance(definition, dict) else None
        if isinstance(props, dict) and "role" in props and "content" in props:
            content = props["content"]
            return (
                "parts"
                if isinstance(content, dict) and content.get("type") == "array"
                else ("messages")
            )
    items = mapping(schema.get("items"))
    if "role" in str(items) or "role" in str(param.get("python_type", "")):
        return "messages"
    return "tuples"
