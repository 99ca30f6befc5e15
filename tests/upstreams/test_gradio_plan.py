"""Endpoint choice and argument mapping from a Gradio app's /info (shapes from gradio 6)."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.core.catalog import Catalog
from proxy.errors import UnknownModel, UpstreamAppError, UpstreamBadResponse
from proxy.routes.bodies import to_generation_request
from proxy.upstreams.gradio_app import AppAPI
from proxy.upstreams.gradio_data import build_data, result_text
from proxy.upstreams.gradio_plan import choose_endpoint, plan_endpoint
from tests.support.bodies import chat_body

CATALOG = Catalog(default="llama-2-7b-chat")


def param(name: str, label: str, default: Any = None, **kind: Any) -> dict[str, Any]:
    return {
        "label": label,
        "parameter_name": name,
        "parameter_has_default": default is not None,
        "parameter_default": default,
        "type": kind or {"type": "string"},
    }


# What gradio 6.31 reports for the seed's app.py: the click handler is a lambda.
SEED_INFO = {
    "named_endpoints": {
        "/lambda": {
            "parameters": [
                param("prompt", "Input"),
                param(
                    "model",
                    "Model",
                    "llama-2-7b-chat",
                    type="string",
                    enum=["llama-2-7b", "llama-2-13b", "llama-2-7b-chat", "llama-2-13b-chat"],
                ),
                param(
                    "max_tokens",
                    "Max New Tokens",
                    500,
                    type="number",
                    description="numeric value between 10 and 1024",
                ),
                param(
                    "temp",
                    "Temperature",
                    0.7,
                    type="number",
                    description="numeric value between 0.1 and 1.5",
                ),
            ]
        }
    }
}
FULL_INFO = {
    "named_endpoints": {
        "/health": {"parameters": []},
        "/predict": {
            "parameters": [
                param("inputs", "inputs"),
                param("model", "model", "llama-2-7b-chat"),
                param("max_new_tokens", "max_new_tokens", 256, type="number"),
                param("temperature", "temperature", 0.7, type="number"),
                param("top_p", "top_p", 0.95, type="number"),
                param("do_sample", "do_sample", True, type="boolean"),
                param("seed", "seed", 42, type="number"),
            ]
        },
    }
}


def request(**parameters: Any):  # type: ignore[no-untyped-def]
    body = chat_body(inputs="Why sleep?", parameters=parameters)
    return to_generation_request(
        body, CATALOG, max_prompt_chars=1000, max_new_tokens_limit=1024, system_prompt="S"
    )


def test_seed_app_maps_by_name_with_synonyms_and_clamps_to_sliders() -> None:
    api = choose_endpoint(AppAPI.of(SEED_INFO), None)
    assert api == "/lambda"
    plan = plan_endpoint(AppAPI.of(SEED_INFO), api, prefix="/gradio_api")
    assert plan.call_path == "/gradio_api/call/lambda"
    assert [p.source for p in plan.params] == ["prompt", "model", "max_new_tokens", "temperature"]
    data = build_data(plan, request(max_new_tokens=5, temperature=0))
    assert data == [
        "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nWhy sleep? [/INST]",
        "llama-2-7b-chat",
        10,
        0.1,
    ]


def test_full_signature_prefers_predict_and_keeps_app_defaults() -> None:
    api = choose_endpoint(AppAPI.of(FULL_INFO), None)
    assert api == "/predict"
    plan = plan_endpoint(AppAPI.of(FULL_INFO), api, prefix="")
    data = build_data(plan, request(max_new_tokens=64, temperature=0.2, top_p=0.5, do_sample=False))
    assert data[1:] == ["llama-2-7b-chat", 64, 0.2, 0.5, False, 42]


def test_label_is_used_when_names_do_not_match() -> None:
    info = {
        "named_endpoints": {
            "/go": {
                "parameters": [
                    param("a", "Prompt"),
                    param("b", "Temperature", 0.7, type="number"),
                ]
            }
        }
    }
    plan = plan_endpoint(AppAPI.of(info), "/go", prefix="")
    assert [p.source for p in plan.params] == ["prompt", "temperature"]


def test_space_api_name_wins_and_is_checked() -> None:
    assert choose_endpoint(AppAPI.of(FULL_INFO), "/health") == "/health"
    with pytest.raises(UpstreamBadResponse, match="SPACE_API_NAME=/nope .* /health, /predict"):
        choose_endpoint(AppAPI.of(FULL_INFO), "/nope")


def test_several_endpoints_without_predict_need_space_api_name() -> None:
    info = {"named_endpoints": {"/a": {"parameters": []}, "/b": {"parameters": []}}}
    with pytest.raises(UpstreamBadResponse, match="SPACE_API_NAME to the one that does: /a, /b"):
        choose_endpoint(AppAPI.of(info), None)
    a, b = {"parameters": [param("prompt", "")]}, {"parameters": [param("text", "")]}
    both = {"named_endpoints": {"/a": a, "/b": b}}
    with pytest.raises(UpstreamBadResponse, match="set SPACE_API_NAME to one of: /a, /b"):
        choose_endpoint(AppAPI.of(both), None)


def test_endpoint_without_prompt_parameter_is_refused() -> None:
    with pytest.raises(UpstreamBadResponse, match="which parameter .* takes the prompt"):
        plan_endpoint(AppAPI.of(FULL_INFO), "/health", prefix="")


def test_model_not_among_the_apps_choices() -> None:
    info = {
        "named_endpoints": {
            "/p": {
                "parameters": [
                    param("prompt", "p"),
                    param("model", "m", "x", type="string", enum=["only-this"]),
                ]
            }
        }
    }
    plan = plan_endpoint(AppAPI.of(info), "/p", prefix="")
    with pytest.raises(UnknownModel, match="not served by this upstream; it serves: only-this"):
        build_data(plan, request())


def test_hub_id_choice_is_matched() -> None:
    info = {
        "named_endpoints": {
            "/p": {
                "parameters": [
                    param("prompt", "p"),
                    param("model", "m", "x", type="string", enum=["meta-llama/Llama-2-7b-chat-hf"]),
                ]
            }
        }
    }
    plan = plan_endpoint(AppAPI.of(info), "/p", prefix="")
    assert build_data(plan, request())[1] == "meta-llama/Llama-2-7b-chat-hf"


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        (["plain"], "plain"),
        ([{"generated_text": "dict"}], "dict"),
        ([[{"generated_text": "pipeline"}]], "pipeline"),
        ("bare", "bare"),
    ],
)
def test_result_text_shapes(payload: Any, text: str) -> None:
    assert result_text(payload) == text


def test_result_error_dict_is_an_app_error() -> None:
    with pytest.raises(UpstreamAppError, match="model failed to load"):
        result_text([{"error": "model failed to load"}])
    with pytest.raises(UpstreamBadResponse):
        result_text([{"something": 1}])
    with pytest.raises(UpstreamBadResponse):
        result_text([])


def component(ident: int, kind: str) -> dict[str, Any]:
    return {"id": ident, "type": kind, "props": {"value": None}}


def dependency(ident: int, api_name: str, inputs: list[int], outputs: list[int], **more: Any):  # type: ignore[no-untyped-def]
    return {
        "id": ident,
        "api_name": api_name,
        "inputs": inputs,
        "outputs": outputs,
        "api_visibility": "public",
        "trigger_after": None,
        "backend_fn": True,
        **more,
    }


# A ChatInterface as gradio 5 describes it: its API event is always named "chat", and takes
# (message, history state, *additional inputs); a second public endpoint beside it.
GRADIO5_CONFIG = {
    "mode": "blocks",
    "components": [
        component(1, "textbox"),
        component(2, "state"),
        component(3, "textbox"),
        component(4, "slider"),
        component(5, "textbox"),
    ],
    "dependencies": [
        dependency(0, "chat", [1, 2, 3, 4], [5, 2]),
        dependency(1, "summarise", [1], [5]),
    ],
}
GRADIO5_INFO = {
    "named_endpoints": {
        "/chat": {
            "parameters": [
                param("message", "Message"),
                param("system_message", "System message", "You are nice."),
                param("max_tokens", "Max new tokens", 512, type="number"),
            ],
            "returns": [{"label": "Response", "component": "Textbox"}],
        },
        "/summarise": {"parameters": [param("text", "Text")]},
    }
}


def test_a_chat_interface_is_found_whatever_gradio_names_it() -> None:
    app = AppAPI.of(GRADIO5_INFO, GRADIO5_CONFIG)
    assert choose_endpoint(app, None) == "/chat"
    plan = plan_endpoint(app, "/chat", prefix="")
    assert (plan.kind, plan.output) == ("chat", 0)
    assert [p.source for p in plan.params] == ["prompt", "system", "max_new_tokens"]
    body = chat_body(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Why sleep?"},
        ],
        parameters={"max_new_tokens": 9},
    )
    req = to_generation_request(
        body, CATALOG, max_prompt_chars=1000, max_new_tokens_limit=1024, system_prompt="S"
    )
    assert build_data(plan, req) == ["Why sleep?", "Be brief.", 9]
    # Renamed as gradio 6 does (after the function): still the chat endpoint.
    renamed = {
        "named_endpoints": {
            "/respond": GRADIO5_INFO["named_endpoints"]["/chat"],
            "/summarise": GRADIO5_INFO["named_endpoints"]["/summarise"],
        }
    }
    config = {
        **GRADIO5_CONFIG,
        "dependencies": [
            dependency(0, "respond", [1, 2, 3, 4], [5, 2]),
            dependency(1, "summarise", [1], [5]),
        ],
    }
    assert choose_endpoint(AppAPI.of(renamed, config), None) == "/respond"


def test_a_chain_whose_follow_up_has_no_api_is_refused_naming_it() -> None:
    config = {
        "components": [component(1, "textbox"), component(2, "chatbot")],
        "dependencies": [
            dependency(0, "user", [1, 2], [1, 2]),
            dependency(1, "false", [2], [2], trigger_after=0, api_visibility="private"),
        ],
    }
    info = {
        "named_endpoints": {
            "/user": {
                "parameters": [
                    {**param("m", "parameter_1"), "component": "Textbox"},
                    param("h", "parameter_2", [], type="array"),
                ]
            }
        }
    }
    with pytest.raises(UpstreamBadResponse, match=r"follows it \(/false, #1\), which has no API"):
        plan_endpoint(AppAPI.of(info, config), "/user", prefix="")


def test_an_app_with_no_public_endpoint_gets_an_error_that_says_so() -> None:
    app = AppAPI.of({"named_endpoints": {}}, {"dependencies": [dependency(0, "false", [], [])]})
    for requested in (None, "/predict"):
        with pytest.raises(UpstreamBadResponse, match="no public API: all 1 of its events"):
            choose_endpoint(app, requested)


@pytest.mark.parametrize(
    ("schema", "form", "value"),
    [
        (  # gradio 6: content parts
            {"$defs": {"Message": {"properties": {"role": {}, "content": {"type": "array"}}}}},
            "parts",
            [
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
            ],
        ),
        (  # gradio 5 type="messages": string content
            {"$defs": {"Message": {"properties": {"role": {}, "content": {"type": "string"}}}}},
            "messages",
            [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        ),
        ({"type": "array", "items": {"type": "array"}}, "tuples", [["Hi", "Hello"]]),  # gradio 4
    ],
)
def test_history_goes_in_the_chatbots_own_format(schema: Any, form: str, value: Any) -> None:
    info = {
        "named_endpoints": {
            "/respond": {
                "parameters": [
                    param("message", "Message"),
                    {**param("chat_history", "Chatbot"), "component": "Chatbot", "type": schema},
                ]
            }
        }
    }
    plan = plan_endpoint(AppAPI.of(info), "/respond", prefix="")
    assert (plan.kind, plan.history_format) == ("chat", form)
    body = chat_body(
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Tips?"},
        ]
    )
    req = to_generation_request(
        body, CATALOG, max_prompt_chars=1000, max_new_tokens_limit=1024, system_prompt="S"
    )
    # No system parameter: it is written before the message; the turns go in the history.
    assert build_data(plan, req) == ["S\n\nTips?", value]


@pytest.mark.parametrize(
    ("payload", "output", "text"),
    [
        (["", [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]], 1, "a"),
        ([[{"role": "assistant", "content": [{"type": "text", "text": "parts"}]}]], 0, "parts"),
        ([[["q", "pair"]]], 0, "pair"),
        ([{"role": "assistant", "content": "message"}, None], 0, "message"),
        ([[{"role": "user", "content": "q"}]], 0, ""),  # no answer yet
    ],
)
def test_result_text_reads_chat_outputs(payload: Any, output: int, text: str) -> None:
    assert result_text(payload, output) == text
