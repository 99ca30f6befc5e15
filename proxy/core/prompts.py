"""Prompt rendering: the Llama 2 chat template for chat models, plain text for base models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from msgspec import Struct

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


class Message(Struct, frozen=True):
    role: Role
    content: str


def is_templated(text: str) -> bool:
    """True when a raw prompt is already in Llama 2 chat format and must be sent as is."""
    head = text.lstrip()
    return head.startswith((BOS, B_INST))


def _turns(messages: Sequence[Message]) -> tuple[str | None, list[Message]]:
    """The leading system message's text (None without one), and the other messages as
    alternating turns: later system messages folded into a user turn, consecutive turns of
    one role joined, as the Llama 2 template requires strict alternation."""
    leading = None
    turns: list[Message] = []
    for index, message in enumerate(messages):
        if message.role == "system":
            if index == 0:
                leading = message.content
                continue
            message = Message("user", message.content)
        if turns and turns[-1].role == message.role:
            turns[-1] = Message(message.role, f"{turns[-1].content}\n\n{message.content}")
        else:
            turns.append(message)
    return leading, turns


def render_chat(messages: Sequence[Message], *, default_system: str) -> str:
    """Render messages with the Llama 2 chat template.

    A leading system message replaces ``default_system``; later system messages are folded into
    the next user turn. Consecutive user (or assistant) turns are joined, as the template requires
    strict alternation.
    """
    leading, turns = _turns(messages)
    system = default_system if leading is None else leading
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


class Conversation(Struct, frozen=True):
    """Messages as a chat app takes them: its system prompt, the turns before the message,
    and the message (the last user turn), each plain text with no template."""

    system: str
    history: tuple[Message, ...]
    message: str


def conversation(messages: Sequence[Message], *, system: str) -> Conversation:
    """``messages`` split for a chat app. A leading system message is ``system`` already
    (the caller's); later ones are folded into the next user turn, as the template does.
    Turns after the last user message (a trailing assistant turn) go into the message."""
    _, turns = _turns(messages)
    last = max((i for i, m in enumerate(turns) if m.role == "user"), default=-1)
    if last < 0:
        return Conversation(system, (), "")
    after = turns[last + 1 :]
    text = turns[last].content
    if after:
        text = "\n\n".join([text, *(f"Assistant: {m.content}" for m in after)])
    return Conversation(system, tuple(turns[:last]), text)


def in_plain_words(conv: Conversation, *, system: bool, history: bool) -> str:
    """The message with, written before it in plain words, the system prompt and the
    earlier turns when the app has no parameter of its own for them (so none is lost)."""
    parts: list[str] = []
    if system and conv.system.strip():
        parts.append(conv.system.strip())
    if history and conv.history:
        lines = [
            f"{'User' if m.role == 'user' else 'Assistant'}: {m.content.strip()}"
            for m in conv.history
        ]
        parts.append("The conversation so far:\n" + "\n".join(lines))
        parts.append(f"User: {conv.message}")
    else:
        parts.append(conv.message)
    return "\n\n".join(parts)
