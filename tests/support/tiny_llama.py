"""A tiny random Llama with a Llama 2 chat tokenizer, built offline for the Space tests.

The weights are random, so replies are word salad: tests compare paths (direct vs gradio vs
gateway) and shapes, never content. Built at test time because saved tokenizers do not load
across transformers major versions.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

# The chat template shipped with meta-llama/Llama-2-*-chat-hf.
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

WORDS = (
    "the a and of to in is you your for on with be it as are this that can or at by have "
    "health sleep water drink rest doctor pain fever cough headache exercise walk food eat "
    "diet heart blood pressure sugar stress breathe calm help care body mind day night hour "
    "hello world llama model chat user assistant system question answer please thank "
    "[INST] [/INST] <<SYS>> <</SYS>> , . ! ? : ;"
).split()


def build_tokenizer(vocab_size: int = 512) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    alphabet = [c for c in string.printable if c not in " \t\r\x0b\x0c"] + ["\u2581"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    corpus = [" ".join(WORDS[i : i + 12]) for i in range(0, len(WORDS), 3)] * 5
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A",
        pair="<s> $A <s> $B",
        special_tokens=[("<s>", tok.token_to_id("<s>"))],
    )
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        model_max_length=256,
        model_input_names=["input_ids", "attention_mask"],
    )
    hf.chat_template = LLAMA2_CHAT_TEMPLATE
    return hf


def make_tiny_llama(out_dir: Path, *, seed: int = 0) -> Path:
    """Save a tokenizer and a random LlamaForCausalLM (about 50k parameters) to ``out_dir``.

    Its generation config samples by default, as Llama-2-chat's does, so tests see whether the
    Space's greedy path really leaves sampling out. Greedy replies never end early (no EOS).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # A zero EOS logit is never the largest of ~500 random ones: greedy replies run to
        # max_new_tokens, so lengths are exact and a long stream can be cut while it runs.
        model.lm_head.weight[tok.eos_token_id].zero_()
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.do_sample = True
    model.generation_config.temperature = 0.6
    model.generation_config.top_p = 0.9
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out_dir)
    model.save_pretrained(out_dir)
    return out_dir
