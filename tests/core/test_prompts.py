"""Llama 2 chat template rendering, exactly as the model card defines it."""

from __future__ import annotations

from proxy.core.prompts import (
    Message,
    conversation,
    in_plain_words,
    is_templated,
    render_chat,
    render_plain,
)


def test_single_turn_with_system() -> None:
    text = render_chat([Message("user", "Hi there")], default_system="Be kind.")
    assert text == "<s>[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nHi there [/INST]"


def test_given_system_message_replaces_default() -> None:
    messages = [Message("system", "Answer in French."), Message("user", "Hello")]
    text = render_chat(messages, default_system="Default.")
    assert "Answer in French." in text and "Default." not in text


def test_multi_turn_conversation() -> None:
    messages = [
        Message("user", "Q1"),
        Message("assistant", "A1"),
        Message("user", "Q2"),
    ]
    assert render_chat(messages, default_system="S") == (
        "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nQ1 [/INST] A1 </s><s>[INST] Q2 [/INST]"
    )


def test_consecutive_user_messages_are_joined() -> None:
    text = render_chat([Message("user", "a"), Message("user", "b")], default_system="")
    assert text == "<s>[INST] a\n\nb [/INST]"


def test_already_templated_detection() -> None:
    assert is_templated("<s>[INST] hi [/INST]")
    assert is_templated("  [INST] hi [/INST]")
    assert not is_templated("Human: hi\nAssistant:")


def test_plain_rendering_for_base_models() -> None:
    assert render_plain([Message("user", "The heart is")]) == "The heart is"
    text = render_plain([Message("system", "Facts."), Message("user", "Why sleep?")])
    assert text == "Facts.\n\nUser: Why sleep?\n\nAssistant:"


def test_a_conversation_splits_into_system_earlier_turns_and_the_message() -> None:
    messages = [
        Message("system", "Be brief."),
        Message("user", "I wake at 3am."),
        Message("assistant", "That is common."),
        Message("system", "Mention a doctor."),
        Message("user", "What helps?"),
    ]
    conv = conversation(messages, system="Be brief.")
    assert conv.system == "Be brief."
    assert conv.history == (
        Message("user", "I wake at 3am."),
        Message("assistant", "That is common."),
    )
    assert conv.message == "Mention a doctor.\n\nWhat helps?"  # a later system turn folded in
    assert in_plain_words(conv, system=False, history=False) == conv.message
    assert in_plain_words(conv, system=True, history=True) == (
        "Be brief.\n\nThe conversation so far:\nUser: I wake at 3am.\n"
        "Assistant: That is common.\n\nUser: Mention a doctor.\n\nWhat helps?"
    )


def test_a_trailing_assistant_turn_stays_in_the_message() -> None:
    conv = conversation([Message("user", "Hi"), Message("assistant", "Hello")], system="")
    assert (conv.history, conv.message) == ((), "Hi\n\nAssistant: Hello")
