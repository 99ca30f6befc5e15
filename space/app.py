"""The Hugging Face Space: Llama 2 chat behind Gradio's queue API, made for the gateway.

Endpoints (Gradio's ``/gradio_api/call/<name>`` flow, or ``gradio_client``):

- ``/predict(inputs, model, max_new_tokens, temperature, top_p, do_sample)`` returns
  ``{"generated_text": ...}``;
- ``/predict_stream`` (same parameters) yields the text so far.

Settings are environment variables (Space settings, or the shell when run locally); see
README.md. Run locally with ``python app.py``.

On ZeroGPU hardware (``SPACES_ZERO_GPU`` set by the platform) each generation runs inside
``@spaces.GPU`` with a duration that grows with ``max_new_tokens``, and the default model is
loaded onto the GPU at start-up, as ZeroGPU requires. Elsewhere the decorator returns the
function unchanged and nothing differs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import gradio as gr
import spaces  # before torch (imported by llama): ZeroGPU patches CUDA at import

from llama import AVAILABLE_MODELS, DEFAULT_MODEL, Generator, ModelStore, load

F = TypeVar("F", bound=Callable[..., Any])

HEALTH_SYSTEM_PROMPT = (
    "You are a careful, friendly health assistant. Give clear, practical general information "
    "about health, wellbeing, sleep, nutrition and exercise. You are not a doctor: do not "
    "diagnose or prescribe, and suggest seeing a health professional or contacting emergency "
    "services when symptoms are severe or worrying."
)


@dataclass(frozen=True, slots=True)
class SpaceSettings:
    model_id_override: str | None
    default_model: str
    system_prompt: str
    max_input_chars: int
    max_input_tokens: int
    max_new_tokens_limit: int
    concurrency_limit: int
    queue_max_size: int
    stream_timeout: float
    # ZeroGPU: the platform sets SPACES_ZERO_GPU (the spaces package reads the same one).
    zero_gpu: bool = False
    # The GPU time asked of ZeroGPU per call: a base plus a share per token, at most a cap.
    gpu_duration_base: float = 15.0
    gpu_seconds_per_token: float = 0.05
    gpu_duration_max: float = 120.0

    @classmethod
    def from_env(cls) -> SpaceSettings:
        env = os.environ
        settings = cls(
            model_id_override=env.get("MODEL_ID_OVERRIDE") or None,
            default_model=env.get("DEFAULT_MODEL", DEFAULT_MODEL),
            system_prompt=env.get("SYSTEM_PROMPT", HEALTH_SYSTEM_PROMPT),
            max_input_chars=int(env.get("MAX_INPUT_CHARS", "16000")),
            max_input_tokens=int(env.get("MAX_INPUT_TOKENS", "3072")),
            max_new_tokens_limit=int(env.get("MAX_NEW_TOKENS_LIMIT", "1024")),
            concurrency_limit=int(env.get("CONCURRENCY_LIMIT", "1")),
            queue_max_size=int(env.get("QUEUE_MAX_SIZE", "16")),
            stream_timeout=float(env.get("STREAM_TIMEOUT", "120")),
            zero_gpu=env.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true"),
            gpu_duration_base=float(env.get("GPU_DURATION_BASE", "15")),
            gpu_seconds_per_token=float(env.get("GPU_SECONDS_PER_TOKEN", "0.05")),
            gpu_duration_max=float(env.get("GPU_DURATION_MAX", "120")),
        )
        if settings.default_model not in AVAILABLE_MODELS:
            choices = ", ".join(AVAILABLE_MODELS)
            raise SystemExit(f"DEFAULT_MODEL={settings.default_model} is not one of {choices}")
        return settings

    def model_id(self, name: str) -> str:
        """The Hub id or local path for a model name; MODEL_ID_OVERRIDE serves every name."""
        return self.model_id_override or AVAILABLE_MODELS[name]

    def gpu_duration(self, max_new_tokens: Any) -> int:
        """Seconds of GPU to ask ZeroGPU for one call of ``max_new_tokens``: more tokens,
        more time; never above the cap (a longer request is refused by ZeroGPU)."""
        try:
            tokens = max(1, int(max_new_tokens))
        except (TypeError, ValueError):
            tokens = 256
        seconds = self.gpu_duration_base + self.gpu_seconds_per_token * tokens
        return int(min(seconds, self.gpu_duration_max))


def validate(
    settings: SpaceSettings,
    inputs: Any,
    model: Any,
    max_new_tokens: Any,
    temperature: Any,
    top_p: Any,
) -> tuple[str, str, int, float, float]:
    """The arguments, checked; a ``gr.Error`` that says what to fix otherwise."""
    if not isinstance(inputs, str) or not inputs.strip():
        raise gr.Error("inputs is empty: send the text to answer")
    if len(inputs) > settings.max_input_chars:
        raise gr.Error(
            f"inputs has {len(inputs)} characters; the limit is {settings.max_input_chars}"
        )
    model = model or settings.default_model
    if model not in AVAILABLE_MODELS:
        raise gr.Error(f"unknown model {model!r}; choose one of: {', '.join(AVAILABLE_MODELS)}")
    if settings.zero_gpu and model != settings.default_model:
        # A ZeroGPU call runs in a process of its own: a model loaded there is gone after it.
        raise gr.Error(
            f"this Space runs on ZeroGPU and serves {settings.default_model} only "
            "(its DEFAULT_MODEL, loaded at start-up)"
        )
    try:
        tokens, temp, nucleus = int(max_new_tokens), float(temperature), float(top_p)
    except (TypeError, ValueError):
        raise gr.Error("max_new_tokens, temperature and top_p must be numbers") from None
    if not 1 <= tokens <= settings.max_new_tokens_limit:
        raise gr.Error(f"max_new_tokens must be between 1 and {settings.max_new_tokens_limit}")
    if not 0.0 <= temp <= 2.0:
        raise gr.Error("temperature must be between 0 and 2 (0 means greedy)")
    if not 0.0 < nucleus <= 1.0:
        raise gr.Error("top_p must be greater than 0 and at most 1")
    return inputs, model, tokens, temp, nucleus


def on_gpu(settings: SpaceSettings) -> Callable[[F], F]:
    """``@spaces.GPU`` for a generation function taking ``(inputs, model, max_new_tokens,
    ...)``: on ZeroGPU each call gets a GPU for ``settings.gpu_duration(max_new_tokens)``
    seconds; elsewhere the function itself is returned."""

    def gpu_time(inputs: Any, model: Any = None, max_new_tokens: Any = 256, *rest: Any) -> int:
        return settings.gpu_duration(max_new_tokens)

    return cast(Callable[[F], F], spaces.GPU(duration=gpu_time))


def build_demo(settings: SpaceSettings, generator: Generator) -> gr.Blocks:
    """The Space's Blocks: documented API endpoints plus a test UI wired to every parameter."""

    gpu = on_gpu(settings)

    @gpu
    def generate_response(
        inputs: str,
        model: str = settings.default_model,
        max_new_tokens: float = 256,
        temperature: float = 0.7,
        top_p: float = 0.95,
        do_sample: bool = True,
    ) -> dict[str, str]:
        text, name, tokens, temp, nucleus = validate(
            settings, inputs, model, max_new_tokens, temperature, top_p
        )
        reply = generator.generate(
            text,
            name,
            max_new_tokens=tokens,
            temperature=temp,
            top_p=nucleus,
            do_sample=bool(do_sample),
        )
        return {"generated_text": reply}

    @gpu
    def generate_stream(
        inputs: str,
        model: str = settings.default_model,
        max_new_tokens: float = 256,
        temperature: float = 0.7,
        top_p: float = 0.95,
        do_sample: bool = True,
    ) -> Iterator[str]:
        text, name, tokens, temp, nucleus = validate(
            settings, inputs, model, max_new_tokens, temperature, top_p
        )
        yield from generator.stream(
            text,
            name,
            max_new_tokens=tokens,
            temperature=temp,
            top_p=nucleus,
            do_sample=bool(do_sample),
        )

    limit = settings.max_new_tokens_limit
    demo = gr.Blocks(title="Health Assistant Llama 2")
    with demo:
        gr.Markdown("# Health Assistant Llama 2\nLlama 2 chat for the health-assistant gateway.")
        with gr.Tab("Test Interface"):
            with gr.Row():
                with gr.Column():
                    model = gr.Dropdown(
                        choices=list(AVAILABLE_MODELS), value=settings.default_model, label="model"
                    )
                    max_new_tokens = gr.Slider(
                        1, limit, value=min(256, limit), step=1, label="max_new_tokens"
                    )
                    temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="temperature")
                    top_p = gr.Slider(0.05, 1.0, value=0.95, step=0.05, label="top_p")
                    do_sample = gr.Checkbox(value=True, label="do_sample")
                with gr.Column():
                    inputs = gr.Textbox(lines=8, label="inputs")
                    with gr.Row():
                        generate = gr.Button("Generate", variant="primary")
                        stream = gr.Button("Stream")
                    result = gr.JSON(label="/predict result")
                    streamed = gr.Textbox(lines=10, label="/predict_stream output")
        with gr.Tab("API"):
            gr.Markdown(API_DOC)
        params = [inputs, model, max_new_tokens, temperature, top_p, do_sample]
        # One GPU: both endpoints share one concurrency slot pool.
        generate.click(
            generate_response,
            params,
            result,
            api_name="predict",
            concurrency_id="llama",
            concurrency_limit=settings.concurrency_limit,
        )
        stream.click(
            generate_stream,
            params,
            streamed,
            api_name="predict_stream",
            concurrency_id="llama",
            concurrency_limit=settings.concurrency_limit,
        )
    demo.queue(max_size=settings.queue_max_size)
    return demo


API_DOC = """
Call this Space through the gateway, or directly with Gradio's queue API:

```
curl -X POST $SPACE/gradio_api/call/predict -H 'Content-Type: application/json' \\
     -d '{"data": ["How much water should I drink?", "llama-2-7b-chat", 256, 0.7, 0.95, true]}'
# -> {"event_id": "..."}; then read the result stream:
curl -N $SPACE/gradio_api/call/predict/<event_id>
```

Parameters, in order: `inputs, model, max_new_tokens, temperature, top_p, do_sample`.
`/predict` returns `{"generated_text": ...}`; `/predict_stream` yields the text so far.
`inputs` may be plain text, a JSON list of `{"role", "content"}` messages, or a prompt already
in Llama 2 chat format (`<s>[INST] ...`). `temperature` 0 or `do_sample` false is greedy.
"""


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = SpaceSettings.from_env()
    store = ModelStore(settings.model_id, lambda model_id: load(model_id, gpu=settings.zero_gpu))
    if settings.zero_gpu:
        # ZeroGPU wants the weights on "cuda" at start-up: it keeps them and attaches a GPU
        # to each @spaces.GPU call; a model loaded inside a call would not outlive it.
        store.preload(settings.default_model)
    generator = Generator(
        store,
        system_prompt=settings.system_prompt,
        max_input_tokens=settings.max_input_tokens,
        stream_timeout=settings.stream_timeout,
    )
    # GRADIO_SERVER_NAME / GRADIO_SERVER_PORT choose the address (a Space sets them).
    build_demo(settings, generator).launch(show_error=True)


if __name__ == "__main__":
    main()
