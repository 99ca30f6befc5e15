"""The Space app on ZeroGPU hardware and off it, with the real ``spaces`` package installed.

The app itself runs off ZeroGPU in tests/space/test_space_app.py, decorated as on ZeroGPU."""

from __future__ import annotations

import dataclasses

import gradio as gr
import pytest
import spaces

import app
import llama

pytestmark = pytest.mark.space

SETTINGS = app.SpaceSettings(
    model_id_override="unused",
    default_model="llama-2-7b-chat",
    system_prompt="Be kind.",
    max_input_chars=2000,
    max_input_tokens=3072,
    max_new_tokens_limit=1024,
    concurrency_limit=1,
    queue_max_size=2,
    stream_timeout=60,
)


def test_off_zerogpu_the_decorator_leaves_the_handlers_as_they_are() -> None:
    """Off ZeroGPU (no SPACES_ZERO_GPU) ``spaces.GPU`` returns the function itself, so the
    Space serves exactly what it served before the decorator."""
    assert not spaces.config.Config.zero_gpu

    def plain(inputs: str) -> str:
        return inputs

    assert spaces.GPU(duration=lambda *args: 10)(plain) is plain
    assert app.on_gpu(SETTINGS)(plain) is plain  # the app's own use of it


def test_the_gpu_time_asked_grows_with_the_budget_and_is_capped() -> None:
    assert SETTINGS.gpu_duration(1) == 15
    assert SETTINGS.gpu_duration(256) == 27  # 15 s + 0.05 s a token
    assert SETTINGS.gpu_duration(1024) == 66
    capped = dataclasses.replace(SETTINGS, gpu_seconds_per_token=1.0)
    assert capped.gpu_duration(1024) == 120
    assert SETTINGS.gpu_duration("not a number") == SETTINGS.gpu_duration(256)


def test_zerogpu_settings_come_from_the_platforms_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setenv("GPU_SECONDS_PER_TOKEN", "0.1")
    settings = app.SpaceSettings.from_env()
    assert settings.zero_gpu and settings.gpu_duration(100) == 25
    monkeypatch.delenv("SPACES_ZERO_GPU")
    assert not app.SpaceSettings.from_env().zero_gpu


def test_on_zerogpu_only_the_model_loaded_at_start_up_is_served() -> None:
    zero = dataclasses.replace(SETTINGS, zero_gpu=True)
    args = (0.7, 0.95)
    assert app.validate(zero, "Hi", "llama-2-7b-chat", 10, *args)[1] == "llama-2-7b-chat"
    with pytest.raises(gr.Error, match="ZeroGPU and serves llama-2-7b-chat only"):
        app.validate(zero, "Hi", "llama-2-13b-chat", 10, *args)
    # Off ZeroGPU any model of the catalogue may be asked for (loaded on demand).
    assert app.validate(SETTINGS, "Hi", "llama-2-13b-chat", 10, *args)[1] == "llama-2-13b-chat"


def test_preload_loads_the_model_before_any_call() -> None:
    loaded: list[str] = []

    def loader(model_id: str) -> llama.Loaded:
        loaded.append(model_id)
        return llama.Loaded(model_id, object(), object())

    store = llama.ModelStore(lambda name: f"hub/{name}", loader)
    store.preload("llama-2-7b-chat")
    assert loaded == ["hub/llama-2-7b-chat"] and store.loaded_id == "hub/llama-2-7b-chat"
