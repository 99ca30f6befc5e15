"""Prompt rendering: the Llama 2 chat template for chat models, plain text for base models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]

HEALTH_SYSTEM_PROMPT = (
    "You are a careful, friendly health assistant. Give clear, practical general information "
    "about health, wellbeing, sleep, nutrition and exercise. You are not a doctor: do not "
    "diagnose or prescribe, suggest seeing a health professional when symptoms are severe, "
    "persistent or worrying, and tell the user to contact emergency services immediately for "
    "anything that could be an emergency."
)

# Llama 2's chat format, as in the model card and the tokenizer's chat template:
# <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST]
B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
BOS, EOS = "<s>", "</s>"


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str


def is_templated(text: str) -> bool:
    """True when a raw prompt is already in Llama 2 chat format and must be sent as is."""
    head = text.lstrip()
    return head.startswith((BOS, B_INST))


def render_chat(messages: Sequence[Message], *, default_system: str) -> str:
    """Render messages with the Llama 2 chat template.

    A leading system message replaces ``default_system``; later system messages are folded into
    the next user turn. Consecutive user (or assistant) turns are joined, as the template requires
    strict alternation.
    """
    system = default_system
    turns: list[Message] = []
    for index, message in enumerate(messages):
        if message.role == "system":
            if index == 0:
                system = message.content
                continue
            message = Message("user", message.content)
        if turns and turns[-1].role == message.role:
            turns[-1] = Message(message.role, f"{turns[-1].content}\n\n{message.content}")
        else:
            turns.append(message)
    if turns and turns[0].role == "assistant":
        turns.insert(0, Message("user", ""))

    parts: list[str] = []
    first = True
    for index in range(0, len(turns), 2):
        user = turns[index].content.strip()
        if first and system.strip():
            user = f"{B_SYS}{system.strip()}{E_SYS}{user}"
        first = False
        answer = turns[index + 1].content.strip() if index + 1 < len(turns) else None
        if answer is None:
            parts.append(f"{BOS}{B_INST} {user} {E_INST}")
        else:
            parts.append(f"{BOS}{B_INST} {user} {E_INST} {answer} {EOS}")
    return "".join(parts)


def render_plain(messages: Sequence[Message]) -> str:
    """Render messages as a plain transcript for a base (non-chat) model to continue."""
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content
    labels = {"system": "", "user": "User: ", "assistant": "Assistant: "}
    lines = [f"{labels[m.role]}{m.content.strip()}" for m in messages]
    if messages[-1].role != "assistant":
        lines.append("Assistant:")
    return "\n\n".join(lines)
