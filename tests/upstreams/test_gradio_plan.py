"""Endpoint choice and argument mapping from a Gradio app's /info (shapes from gradio 6)."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.catalog import Catalog
from proxy.errors import UnknownModel, UpstreamAppError, UpstreamBadResponse
from proxy.schemas import ChatRequest, to_generation_request
from proxy.upstreams.gradio_data import build_data, result_text
from proxy.upstreams.gradio_plan import AppAPI, choose_endpoint, plan_endpoint

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
    body = ChatRequest(inputs="Why sleep?", parameters=parameters)
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
