"""Llama 2 for the Space: which models exist, keeping one in memory, prompting and generating.

No Gradio here: ``app.py`` validates input and serves these functions. Everything runs on
whatever device torch has (a GPU on a Space, the CPU in tests).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

logger = logging.getLogger("space.llama")

# The four models the seed offered: name -> Hugging Face model id.
AVAILABLE_MODELS: dict[str, str] = {
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-2-13b": "meta-llama/Llama-2-13b-hf",
    "llama-2-7b-chat": "meta-llama/Llama-2-7b-chat-hf",
    "llama-2-13b-chat": "meta-llama/Llama-2-13b-chat-hf",
}
DEFAULT_MODEL = "llama-2-7b-chat"
# A prompt already in Llama 2 chat format (the gateway sends these) is tokenized as is.
TEMPLATED_PREFIXES = ("<s>", "[INST]")


@dataclass(frozen=True, slots=True)
class Loaded:
    """A model with its tokenizer, as one unit: they are only ever used together."""

    model_id: str
    model: Any
    tokenizer: Any


def is_chat_model(name: str) -> bool:
    return name.endswith("-chat")


def load(model_id: str, *, gpu: bool = False) -> Loaded:
    """Load a model by Hub id or local directory: fp16 on a GPU, fp32 on the CPU.

    ``gpu`` (ZeroGPU) moves it to ``cuda`` whole, without a device map: ZeroGPU emulates
    CUDA at start-up and attaches the real GPU during each ``@spaces.GPU`` call.
    """
    logger.info("loading model %s", model_id)
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    if gpu:
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float16)
        model.to(torch.device("cuda"))  # type: ignore[arg-type]  # transformers types .to oddly
    elif torch.cuda.is_available():
        # device_map needs accelerate; only a GPU machine has use for it.
        model = AutoModelForCausalLM.from_pretrained(
            model_id, dtype=torch.float16, device_map="auto", low_cpu_mem_usage=True
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch.float32)
    model.eval()  # type: ignore[no-untyped-call]
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(model_id, model, tokenizer)


class ModelStore:
    """Keeps exactly one model in memory and switches it safely under concurrent requests.

    Requests for the loaded model share it. A request for another model waits until the
    current users are done (newcomers for the old model wait behind it, so a switch is never
    starved), then the old model is dropped before the new one is loaded.
    """

    def __init__(self, resolve: Callable[[str], str], loader: Callable[[str], Loaded] = load):
        self._resolve = resolve
        self._loader = loader
        self._cond = threading.Condition()
        self._loaded: Loaded | None = None
        self._users = 0
        self._switch_waiting = 0
        self.loads = 0

    def preload(self, name: str) -> None:
        """Load ``name`` now (ZeroGPU: before the app serves)."""
        with self.lease(name):
            pass

    @property
    def loaded_id(self) -> str | None:
        return self._loaded.model_id if self._loaded else None

    @contextmanager
    def lease(self, name: str) -> Iterator[Loaded]:
        model_id = self._resolve(name)
        with self._cond:
            waiting_to_switch = False
            try:
                # Only ids in locals here: a reference to the old model would keep it in
                # memory while the new one loads.
                while True:
                    if self.loaded_id == model_id:
                        if waiting_to_switch or not self._switch_waiting:
                            break
                    elif self._users == 0:
                        self._swap(model_id)
                        break
                    elif not waiting_to_switch:
                        waiting_to_switch = True
                        self._switch_waiting += 1
                    self._cond.wait()
            finally:
                if waiting_to_switch:
                    self._switch_waiting -= 1
            self._users += 1
            loaded = self._loaded
            assert loaded is not None
        try:
            yield loaded
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()

    def _swap(self, model_id: str) -> None:
        """Drop the current model, then load ``model_id``. Called with the lock held."""
        self._loaded = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        try:
            self._loaded = self._loader(model_id)
        finally:
            self.loads += 1
            self._cond.notify_all()


def parse_messages(text: str) -> list[dict[str, str]] | None:
    """``inputs`` holding a JSON list of ``{"role", "content"}`` messages, else None."""
    if not text.lstrip().startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not value:
        return None
    messages = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            return None
        if item.get("role") not in ("system", "user", "assistant"):
            return None
        messages.append({"role": item["role"], "content": item["content"]})
    return messages


def encode(
    tokenizer: Any, inputs: str, *, chat: bool, system_prompt: str, max_input_tokens: int
) -> dict[str, torch.Tensor]:
    """Token ids and attention mask for ``inputs``, keeping the last ``max_input_tokens``.

    Chat models: a prompt already in Llama 2 format is used as is (without a second BOS), a
    JSON message list or plain text goes through the tokenizer's chat template with the system
    prompt. Base models: the text as it is.
    """
    messages = parse_messages(inputs)
    if chat and messages is None and not inputs.lstrip().startswith(TEMPLATED_PREFIXES):
        messages = [{"role": "user", "content": inputs}]
    if messages is not None:
        if messages[0]["role"] != "system" and system_prompt:
            messages = [{"role": "system", "content": system_prompt}, *messages]
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
    else:
        has_bos = inputs.lstrip().startswith("<s>")
        encoded = tokenizer(inputs, return_tensors="pt", add_special_tokens=not has_bos)
    return {
        "input_ids": encoded["input_ids"][:, -max_input_tokens:],
        "attention_mask": encoded["attention_mask"][:, -max_input_tokens:],
    }


def generation_config(
    tokenizer: Any, *, max_new_tokens: int, temperature: float, top_p: float, do_sample: bool
) -> GenerationConfig:
    """A complete config for one call, so the model's own sampling defaults never leak in.

    ``temperature == 0`` or ``do_sample`` false means greedy, with no sampling arguments
    at all (transformers warns about those in greedy mode).
    """
    sample = bool(do_sample) and temperature > 0
    options: dict[str, Any] = {
        "max_new_tokens": int(max_new_tokens),
        "do_sample": sample,
        "num_beams": 1,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    if sample:
        options.update(temperature=float(temperature), top_p=float(top_p))
    else:
        # Neutral values, not None: None lets the model's own sampling defaults back in.
        options.update(temperature=1.0, top_p=1.0)
    return GenerationConfig(**options)  # type: ignore[no-untyped-call]


class StopWhenSet(StoppingCriteria):
    """Stops generation once the event is set: the reader of a stream has gone."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
        return torch.full(
            (input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device
        )


class Generator:
    """Generates replies with the model a request names, one model in memory at a time."""

    def __init__(
        self,
        store: ModelStore,
        *,
        system_prompt: str,
        max_input_tokens: int,
        stream_timeout: float,
    ) -> None:
        self.store = store
        self.system_prompt = system_prompt
        self.max_input_tokens = max_input_tokens
        self.stream_timeout = stream_timeout

    def _prepare(self, loaded: Loaded, inputs: str, model: str) -> dict[str, torch.Tensor]:
        encoded = encode(
            loaded.tokenizer,
            inputs,
            chat=is_chat_model(model),
            system_prompt=self.system_prompt,
            max_input_tokens=self.max_input_tokens,
        )
        return {key: value.to(loaded.model.device) for key, value in encoded.items()}

    def generate(
        self,
        inputs: str,
        model: str,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        do_sample: bool,
    ) -> str:
        """The reply: only the new tokens, decoded."""
        with self.store.lease(model) as loaded:
            encoded = self._prepare(loaded, inputs, model)
            config = generation_config(
                loaded.tokenizer,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                do_sample=do_sample,
            )
            with torch.inference_mode():
                output = loaded.model.generate(**encoded, generation_config=config)
            prompt_length = encoded["input_ids"].shape[1]
            text: str = loaded.tokenizer.decode(output[0, prompt_length:], skip_special_tokens=True)
            return text.strip()

    def stream(
        self,
        inputs: str,
        model: str,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        do_sample: bool,
    ) -> Iterator[str]:
        """The reply so far, growing: generation runs in a worker thread.

        Closing the iterator early (the client left) stops the worker at its next token.
        """
        with self.store.lease(model) as loaded:
            encoded = self._prepare(loaded, inputs, model)
            config = generation_config(
                loaded.tokenizer,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                do_sample=do_sample,
            )
            streamer = TextIteratorStreamer(
                loaded.tokenizer,
                skip_prompt=True,
                skip_special_tokens=True,
                timeout=self.stream_timeout,
            )
            stop = threading.Event()
            failure: list[BaseException] = []

            def work() -> None:
                try:
                    with torch.inference_mode():
                        loaded.model.generate(
                            **encoded,
                            generation_config=config,
                            streamer=streamer,
                            stopping_criteria=StoppingCriteriaList([StopWhenSet(stop)]),
                        )
                except BaseException as exc:  # handed to the reading thread
                    failure.append(exc)
                    streamer.end()  # type: ignore[no-untyped-call]  # wake the reader now

            worker = threading.Thread(target=work, name="generate-stream", daemon=True)
            worker.start()
            text = sent = ""
            finished = False
            try:
                for piece in streamer:
                    if failure:
                        break
                    text += piece
                    if text.strip() != sent:
                        sent = text.strip()
                        yield sent
                finished = True
            finally:
                if not finished:
                    stop.set()
                    logger.info("stream stopped early: generation cancelled")
                # The model stays leased until its worker is done with it.
                worker.join()
            if failure:
                raise failure[0]
