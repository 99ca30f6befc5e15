"""Real Gradio apps in the shapes of public Llama 2 chat Spaces, one process, one path each.

- ``/official``: the official 7B/13B chat Spaces' shape: a streaming ``gr.ChatInterface`` with
  additional inputs (system prompt, max new tokens, temperature, top-p, top-k, repetition
  penalty), ``@spaces.GPU`` on the generator (a no-op off ZeroGPU). It honours the budget.
- ``/bare``: ``gr.ChatInterface(predict)``: only ``message``; a long streamed answer whatever
  the budget (gradio 6 names its endpoint ``/predict``).
- ``/pipeline``: a text-to-text ``gr.Interface`` that returns the prompt plus the completion,
  as ``gr.Interface.from_pipeline`` with text generation does.
- ``/blocks``: an older Blocks chat: ``user(message, history)`` (queue=False) then
  ``.then(bot)``, a ``gr.State`` written by the first and read by the second.
- ``/private``: every event registered with ``api_name=False``.
- ``/zerogpu``: raises the ``spaces`` package's own errors (its titles and wordings), chosen
  by the message: ``quota``, ``limit``, ``runs``, ``nogpu``, ``queued``, ``duration``.

No model: each call appends what the app received (message, system prompt, history,
parameters) to the JSON-lines file named by argv[2], so tests read back what arrived; a
generator closed before its end (the call was cancelled) logs ``stopped``.

Run: ``python tests/e2e/space_shapes.py PORT LOG``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import gradio as gr
import spaces
import uvicorn
from fastapi import FastAPI
from spaces.zero import client as zero_client
from spaces.zero.gradio import error as zero_error

LOG = sys.argv[2] if len(sys.argv) > 2 else "/dev/null"
ANSWER = "Rest well, drink water and keep a regular bedtime every single night of the week."
LONG_ANSWER = " ".join(f"word{i}" for i in range(50))


def log(app: str, **entry: Any) -> None:
    with open(LOG, "a", encoding="utf-8") as out:
        out.write(json.dumps({"app": app, **entry}) + "\n")


def words(text: str) -> list[str]:
    return [w + " " for w in text.split()]


def official_app() -> gr.ChatInterface:
    @spaces.GPU(duration=lambda *args: 30)
    def generate(
        message: str,
        history: list[dict[str, Any]],
        system_prompt: str,
        max_new_tokens: float,
        temperature: float,
        top_p: float,
        top_k: float,
        repetition_penalty: float,
    ) -> Iterator[str]:
        log(
            "official",
            message=message,
            history=history,
            system=system_prompt,
            params={
                "max_new_tokens": max_new_tokens,
                "temperature": temperature,
                "top_p": top_p,
                "top_k": top_k,
                "repetition_penalty": repetition_penalty,
            },
        )
        out = ""
        for piece in words(ANSWER)[: int(max_new_tokens)]:  # a "token" is a word here
            time.sleep(0.02)
            out += piece
            yield out.strip()

    return gr.ChatInterface(
        generate,
        additional_inputs=[
            gr.Textbox(label="System prompt", lines=6),
            gr.Slider(label="Max new tokens", minimum=1, maximum=2048, step=1, value=1024),
            gr.Slider(label="Temperature", minimum=0.1, maximum=4.0, step=0.1, value=0.6),
            gr.Slider(label="Top-p (nucleus sampling)", minimum=0.05, maximum=1.0, value=0.9),
            gr.Slider(label="Top-k", minimum=1, maximum=1000, step=1, value=50),
            gr.Slider(label="Repetition penalty", minimum=1.0, maximum=2.0, value=1.2),
        ],
    )


def bare_app() -> gr.ChatInterface:
    def predict(message: str, history: list[dict[str, Any]]) -> Iterator[str]:
        log("bare", message=message, history=history)
        out = ""
        yielded = 0
        try:
            for piece in words(LONG_ANSWER):
                time.sleep(0.03)
                out += piece
                yielded += 1
                yield out.strip()
        finally:
            if yielded < len(words(LONG_ANSWER)):
                log("bare", event="stopped", yielded=yielded)

    return gr.ChatInterface(predict)


def pipeline_app() -> gr.Interface:
    def complete(text: str) -> str:
        log("pipeline", message=text)
        return text + " Sleep seven to nine hours."  # the full text: prompt + completion

    return gr.Interface(complete, gr.Textbox(label="Input"), gr.Textbox(label="Output"))


def blocks_app() -> gr.Blocks:
    with gr.Blocks() as demo:
        chatbot = gr.Chatbot()
        msg = gr.Textbox()
        asked = gr.State("")

        def user(user_message: str, history: list[Any], _: str) -> tuple[str, list[Any], str]:
            log("blocks", step="user", message=user_message, history=history)
            turn = {"role": "user", "content": [{"type": "text", "text": user_message}]}
            return "", [*history, turn], user_message

        def bot(history: list[Any], question: str) -> Iterator[list[Any]]:
            log("blocks", step="bot", state=question, turns=len(history))
            last_line = question.strip().splitlines()[-1]
            reply = f"On {last_line.removeprefix('User: ')!r}: rest and drink water."
            history = [*history, {"role": "assistant", "content": ""}]
            out = ""
            for piece in words(reply):
                out += piece
                history[-1] = {"role": "assistant", "content": out.strip()}
                yield history

        msg.submit(user, [msg, chatbot, asked], [msg, chatbot, asked], queue=False).then(
            bot, [chatbot, asked], chatbot
        )
        gr.Button("Clear").click(list, None, chatbot, api_name="init_history")
    return demo


def private_app() -> gr.Blocks:
    with gr.Blocks() as demo:
        text, out = gr.Textbox(), gr.Textbox()
        text.submit(lambda value: value, text, out, api_name=False)
        gr.Button("Go").click(lambda value: value, text, out, api_name=False)
    return demo


# The spaces package's own titles and wordings (spaces/zero/client.py).
ZERO_ERRORS = {
    "quota": (
        "ZeroGPU quota exceeded",
        "You have exceeded your free ZeroGPU quota (60s requested vs. 12s left). "
        "Try again in 0:05:22. Subscribe to Hugging Face PRO to get "
        f"{zero_client.PRO_QUOTA_MINUTES} min of ZeroGPU quota a day - "
        f"{zero_client.SUBSCRIBE_TO_PRO_URL}",
    ),
    "limit": (
        "ZeroGPU quota exceeded",
        f"Space app has reached its GPU limit. {zero_client.EXAMPLES_RETRY_MESSAGE}",
    ),
    "runs": ("ZeroGPU quota exceeded", "You have exceeded your ZeroGPU runs limit. "),
    "nogpu": ("ZeroGPU client error", zero_client.NO_GPU_MESSAGE_REGULAR),
    "queued": (
        "ZeroGPU quota exceeded",
        f"{zero_client.NO_GPU_MESSAGE_INQUEUE}. {zero_client.EXAMPLES_RETRY_MESSAGE}",
    ),
    "duration": (
        "ZeroGPU illegal duration",
        "The requested GPU duration (900s) is larger than the maximum allowed",
    ),
}


def zerogpu_app() -> gr.ChatInterface:
    @spaces.GPU
    def answer(message: str, history: list[Any]) -> str:
        log("zerogpu", message=message)
        for word, (title, text) in ZERO_ERRORS.items():
            if word in message.lower().split():
                raise zero_error(title, text)
        return "ZeroGPU had a slice for you."

    return gr.ChatInterface(answer)


def main() -> None:
    app = FastAPI()
    apps = {
        "official": official_app(),
        "bare": bare_app(),
        "pipeline": pipeline_app(),
        "blocks": blocks_app(),
        "private": private_app(),
        "zerogpu": zerogpu_app(),
    }
    for name, demo in apps.items():
        app = gr.mount_gradio_app(app, demo, path=f"/{name}")
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
