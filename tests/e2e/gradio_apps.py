"""Real Gradio apps for the end-to-end tests, served by one process under two paths:

- ``/seed``: the seed document's app.py UI as written: its only endpoint is the click lambda,
  which Gradio names ``/lambda``, with parameters ``prompt, model, max_tokens, temp``; it
  returns a plain string.
- ``/full``: ``/predict`` with the full ``generate_response`` signature returning
  ``{"generated_text": ...}``, ``/predict_stream`` yielding the accumulated text of a fixed
  answer (continued from the start of it a prompt holds, as a greedy model would), and a
  ``/slow`` endpoint.
- ``/a``, ``/b``, ``/c``: replicas of ``/full``, each call logged with its app's name.

No model: the replies echo what arrived, so tests can check the mapping exactly. Each call
appends the headers it received (read through ``gr.Request``) to the file named by argv[2].

Run: ``python tests/e2e/gradio_apps.py PORT HEADERS_LOG``.
"""

from __future__ import annotations

import json
import re
import sys
import time

import gradio as gr
import uvicorn
from fastapi import FastAPI

ANSWER = "Rest well and drink water."
MODELS = ["llama-2-7b", "llama-2-13b", "llama-2-7b-chat", "llama-2-13b-chat"]
HEADERS_LOG = sys.argv[2] if len(sys.argv) > 2 else "/dev/null"


def record(
    request: gr.Request | None, endpoint: str, inputs: str, app: str = "", **more: object
) -> None:
    """Log the call: its app, headers and the end of its prompt (tests count calls by it)."""
    if request is None:
        return
    entry = {
        "endpoint": endpoint,
        "app": app,
        "headers": dict(request.headers),
        "tail": inputs[-80:],
        **more,
    }
    with open(HEADERS_LOG, "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


def describe(inputs: str, model: str, max_new_tokens: float, temperature: float) -> str:
    return f"[{model}|{int(max_new_tokens)}|{temperature:g}] {inputs}"


def seed_app() -> gr.Blocks:
    def generate_response(
        inputs,
        model="llama-2-7b-chat",
        max_new_tokens=500,
        temperature=0.7,
        top_p=0.95,
        do_sample=True,
    ):  # the seed's signature
        return {"generated_text": describe(inputs, model, max_new_tokens, temperature)}

    with gr.Blocks() as demo:
        with gr.Tab("Test Interface"):
            model_dropdown = gr.Dropdown(choices=MODELS, value="llama-2-7b-chat", label="Model")
            temperature_slider = gr.Slider(
                minimum=0.1, maximum=1.5, value=0.7, step=0.1, label="Temperature"
            )
            max_tokens_slider = gr.Slider(
                minimum=10, maximum=1024, value=500, step=10, label="Max New Tokens"
            )
            input_text = gr.Textbox(lines=10, label="Input")
            submit_btn = gr.Button("Generate")
            output_text = gr.Textbox(lines=12, label="Generated Output")
            submit_btn.click(
                fn=lambda prompt, model, max_tokens, temp: generate_response(
                    prompt, model, max_tokens, temp
                )["generated_text"],
                inputs=[input_text, model_dropdown, max_tokens_slider, temperature_slider],
                outputs=output_text,
            )
    return demo


def full_app(label: str = "full") -> gr.Blocks:
    def generate_response(
        inputs: str,
        model: str,
        max_new_tokens: float,
        temperature: float,
        top_p: float,
        do_sample: bool,
        request: gr.Request,
    ) -> dict:
        record(request, "/predict", inputs, label)
        if "SLOW" in inputs:
            time.sleep(1.0)
        if "RAISE" in inputs:
            raise gr.Error("the model could not answer that")
        text = describe(inputs, model, max_new_tokens, temperature)
        return {"generated_text": f"{text} top_p={top_p:g} do_sample={do_sample}"}

    def generate_stream(
        inputs: str,
        model: str,
        max_new_tokens: float,
        temperature: float,
        top_p: float,
        do_sample: bool,
        request: gr.Request,
    ):
        record(request, "/predict_stream", inputs, label, max_new_tokens=int(max_new_tokens))
        # A deterministic model: ANSWER, continued from whatever start of it the prompt holds
        # after [/INST] (what a greedy model continuing a broken answer would do).
        written = inputs.rsplit("[/INST]", 1)[-1].strip() if "[/INST]" in inputs else ""
        rest = ANSWER[len(written) :] if written and ANSWER.startswith(written) else ANSWER
        if "LONG" in inputs:  # ten seconds of words, for a client that leaves early
            rest = " word" * 200
        out = ""
        try:
            for piece in re.findall(r"\s*\S+", rest)[: int(max_new_tokens)]:
                time.sleep(0.05)
                out += piece
                yield out
        except GeneratorExit:  # stopped before its end: a cancel, or the stream was closed
            with open(HEADERS_LOG + ".stopped", "a", encoding="utf-8") as log:
                log.write(json.dumps({"app": label, "tail": inputs[-80:]}) + "\n")
            raise

    def slow(inputs: str) -> str:
        time.sleep(2)
        return inputs

    with gr.Blocks() as demo:
        inputs = gr.Textbox(label="inputs")
        model = gr.Dropdown(choices=MODELS, value="llama-2-7b-chat", label="model")
        max_new_tokens = gr.Slider(1, 1024, value=256, step=1, label="max_new_tokens")
        temperature = gr.Slider(0.0, 2.0, value=0.7, label="temperature")
        top_p = gr.Slider(0.01, 1.0, value=0.95, label="top_p")
        do_sample = gr.Checkbox(value=True, label="do_sample")
        params = [inputs, model, max_new_tokens, temperature, top_p, do_sample]
        # concurrency_limit=None: several calls at once, so counting calls measures the
        # gateway's coalescing, not the Space's queue.
        gr.Button("Generate").click(
            generate_response, params, gr.JSON(), api_name="predict", concurrency_limit=None
        )
        gr.Button("Stream").click(generate_stream, params, gr.Textbox(), api_name="predict_stream")
        gr.Button("Slow").click(slow, inputs, gr.Textbox(), api_name="slow")
    return demo


def main() -> None:
    port = int(sys.argv[1])
    app = FastAPI()
    app = gr.mount_gradio_app(app, seed_app().queue(), path="/seed")
    app = gr.mount_gradio_app(app, full_app().queue(), path="/full")
    for label in ("a", "b", "c"):  # replicas, for the router's tests
        app = gr.mount_gradio_app(app, full_app(label).queue(), path=f"/{label}")
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
