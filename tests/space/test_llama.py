"""The Space's model code in process, on real tiny Llamas: prompting, greedy and sampled
generation, streaming and its cancellation, and one model in memory under concurrency."""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers

from proxy.core.prompts import Message, render_chat
from tests.space.conftest import TinyModels
from tests.support.servers import wait_until

import llama

pytestmark = pytest.mark.space

SYSTEM = "You are a careful health assistant."
GREEDY: dict[str, Any] = {"temperature": 0.0, "top_p": 1.0, "do_sample": False}


def make_generator(resolve: dict[str, Path], **loader: Any) -> llama.Generator:
    store = llama.ModelStore(lambda name: str(resolve[name]), **loader)
    return llama.Generator(store, system_prompt=SYSTEM, max_input_tokens=512, stream_timeout=60)


@pytest.fixture(scope="module")
def generator(tiny_models: TinyModels) -> llama.Generator:
    every = dict.fromkeys(llama.AVAILABLE_MODELS, tiny_models.first)
    return make_generator(every)


@pytest.fixture
def transformers_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """What transformers logs (it does not propagate to the root logger by default)."""
    transformers.utils.logging.enable_propagation()
    caplog.set_level(logging.INFO, logger="transformers")
    yield caplog
    transformers.utils.logging.disable_propagation()


def ids(generator: llama.Generator, inputs: str, *, chat: bool = True) -> list[int]:
    with generator.store.lease("llama-2-7b-chat") as loaded:
        encoded = llama.encode(
            loaded.tokenizer, inputs, chat=chat, system_prompt=SYSTEM, max_input_tokens=512
        )
        return [int(i) for i in encoded["input_ids"][0]]


def test_plain_text_to_a_chat_model_uses_the_llama2_chat_template(
    generator: llama.Generator,
) -> None:
    with generator.store.lease("llama-2-7b-chat") as loaded:
        tokenizer = loaded.tokenizer
    expected = f"<s>[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\nhello doctor [/INST]"
    got = ids(generator, "hello doctor")
    assert got == tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert got.count(tokenizer.bos_token_id) == 1  # no second BOS


def test_the_gateways_templated_prompt_and_a_message_list_tokenize_alike(
    generator: llama.Generator,
) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "sleep help please"},
    ]
    rendered = render_chat([Message(**m) for m in messages], default_system=SYSTEM)  # type: ignore[arg-type]
    from_gateway = ids(generator, rendered)
    from_messages = ids(generator, json.dumps(messages))
    assert from_gateway == from_messages
    with generator.store.lease("llama-2-7b-chat") as loaded:
        assert from_gateway.count(loaded.tokenizer.bos_token_id) == 2  # one per user turn


def test_base_models_get_the_text_as_it_is(generator: llama.Generator) -> None:
    with generator.store.lease("llama-2-7b-chat") as loaded:
        plain = loaded.tokenizer("the heart is")["input_ids"]
    assert ids(generator, "the heart is", chat=False) == plain


def test_greedy_is_deterministic_exact_and_quiet(
    generator: llama.Generator, transformers_log: pytest.LogCaptureFixture
) -> None:
    # The tiny model's own generation config samples at temperature 0.6, like Llama-2-chat's.
    first = generator.generate("water", "llama-2-7b-chat", max_new_tokens=12, **GREEDY)
    again = generator.generate("water", "llama-2-7b-chat", max_new_tokens=12, **GREEDY)
    sampled_off = generator.generate(
        "water", "llama-2-7b-chat", max_new_tokens=12, temperature=0.9, top_p=0.5, do_sample=False
    )
    assert first and first == again == sampled_off
    assert "[INST]" not in first[:7]  # only new tokens: the reply does not start with the prompt
    assert not [r for r in transformers_log.records if "generation flags" in r.getMessage()]


def test_sampling_follows_the_seed(generator: llama.Generator) -> None:
    def sample() -> str:
        torch.manual_seed(123)
        return generator.generate(
            "water", "llama-2-7b-chat", max_new_tokens=16, temperature=1.5, top_p=1.0,
            do_sample=True,
        )  # fmt: skip

    first, second = sample(), sample()
    assert first == second
    greedy = generator.generate("water", "llama-2-7b-chat", max_new_tokens=16, **GREEDY)
    assert first != greedy


def test_stream_grows_and_ends_where_generate_does(generator: llama.Generator) -> None:
    parts = list(generator.stream("rest", "llama-2-7b-chat", max_new_tokens=20, **GREEDY))
    assert len(parts) > 3
    assert all(later.startswith(earlier) for earlier, later in zip(parts, parts[1:], strict=False))
    assert parts[-1] == generator.generate("rest", "llama-2-7b-chat", max_new_tokens=20, **GREEDY)


def test_closing_a_stream_stops_generation(
    generator: llama.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="space.llama")
    stream = generator.stream("rest", "llama-2-7b-chat", max_new_tokens=4000, **GREEDY)
    for _ in range(3):
        next(stream)
    started = threading.active_count()
    stream.close()  # what Gradio does when the client leaves
    # close() joins the worker: it is gone and the model is free again.
    assert threading.active_count() < started
    assert "stream stopped early" in caplog.text
    assert generator.store._users == 0


class OutOfMemoryModel:
    """A model whose generate() fails in the worker thread, as a GPU out of memory does."""

    device = torch.device("cpu")

    def generate(self, **kwargs: Any) -> None:
        raise RuntimeError("CUDA out of memory")


def test_a_failing_generation_ends_the_stream_at_once(tiny_models: TinyModels) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_models.first)
    store = llama.ModelStore(
        lambda name: name,
        loader=lambda model_id: llama.Loaded(model_id, OutOfMemoryModel(), tokenizer),
    )
    # The reader must get the worker's error, not wait for the streamer's timeout (60 s).
    generator = llama.Generator(store, system_prompt=SYSTEM, max_input_tokens=64, stream_timeout=60)
    outcome: list[BaseException] = []

    def consume() -> None:
        try:
            list(generator.stream("rest", "llama-2-7b-chat", max_new_tokens=8, **GREEDY))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    wait_until(lambda: outcome, timeout=20, what="the stream to raise")
    reader.join(5)
    assert isinstance(outcome[0], RuntimeError) and "out of memory" in str(outcome[0])
    assert store._users == 0


def test_one_model_in_memory_while_requests_switch_between_two(tiny_models: TinyModels) -> None:
    alive: list[weakref.ref[Any]] = []
    in_memory_at_load: list[int] = []

    def tracking_loader(model_id: str) -> llama.Loaded:
        gc.collect()
        in_memory_at_load.append(sum(ref() is not None for ref in alive))
        loaded = llama.load(model_id)
        alive.append(weakref.ref(loaded.model))
        return loaded

    resolve = {"llama-2-7b-chat": tiny_models.first, "llama-2-13b-chat": tiny_models.second}
    generator = make_generator(resolve, loader=tracking_loader)
    solo = {
        name: generator.generate("sleep", name, max_new_tokens=24, **GREEDY) for name in resolve
    }
    assert solo["llama-2-7b-chat"] != solo["llama-2-13b-chat"]

    names = ["llama-2-7b-chat", "llama-2-13b-chat"] * 6
    with ThreadPoolExecutor(6) as pool:
        replies = list(
            pool.map(
                lambda name: (name, generator.generate("sleep", name, max_new_tokens=24, **GREEDY)),
                names,
            )
        )
    assert all(reply == solo[name] for name, reply in replies)
    assert in_memory_at_load and max(in_memory_at_load) == 0  # the old one was gone first


def test_a_switch_waits_for_users_and_is_not_starved() -> None:
    loads: list[str] = []

    def fake_loader(model_id: str) -> llama.Loaded:
        loads.append(model_id)
        return llama.Loaded(model_id, object(), object())

    store = llama.ModelStore(lambda name: name, loader=fake_loader)
    assert loads == [] and store.loaded_id is None  # lazy: nothing loads before a request
    release_a = threading.Event()
    order: list[str] = []

    def use(name: str, hold: threading.Event | None = None) -> None:
        with store.lease(name) as loaded:
            order.append(f"{name}:{loaded.model_id}")
            if hold is not None:
                hold.wait(10)

    first_a = threading.Thread(target=use, args=("a", release_a))
    first_a.start()
    wait_until(lambda: store._users == 1, timeout=5, what="the first user of a")
    switch_to_b = threading.Thread(target=use, args=("b",))
    switch_to_b.start()
    wait_until(lambda: store._switch_waiting == 1, timeout=5, what="the switch to b to wait")
    late_a = threading.Thread(target=use, args=("a",))
    late_a.start()
    time.sleep(0.05)  # give late_a the chance to jump the queue, which it must not take
    assert order == ["a:a"] and loads == ["a"]
    release_a.set()
    for thread in (first_a, switch_to_b, late_a):
        thread.join(10)
    assert order == ["a:a", "b:b", "a:a"]
    assert loads == ["a", "b", "a"]
