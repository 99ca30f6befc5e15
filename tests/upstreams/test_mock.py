"""Test mode: topical, deterministic replies with emergency guidance and a disclaimer."""

from __future__ import annotations

import re

import pytest

from proxy.core.catalog import Catalog
from proxy.routes.bodies import to_generation_request
from proxy.upstreams.mock import MockUpstream
from proxy.upstreams.mock_replies import CRISIS_GUIDANCE, DISCLAIMER, EMERGENCY_GUIDANCE
from tests.support.bodies import chat_body

CATALOG = Catalog(default="llama-2-7b-chat")


def request(text: str, *, model: str = "llama-2-7b-chat", max_new_tokens: int = 400):  # type: ignore[no-untyped-def]
    body = chat_body(inputs=text, model=model, parameters={"max_new_tokens": max_new_tokens})
    return to_generation_request(
        body, CATALOG, max_prompt_chars=10_000, max_new_tokens_limit=1024, system_prompt=None
    )


async def reply(text: str, **kw: object) -> str:
    generation = await MockUpstream().generate(request(text, **kw))  # type: ignore[arg-type]
    return generation.text


TOPICS = [
    ("I can't sleep at night, any advice?", ["sleep"]),
    ("I get a headache every afternoon", ["headache"]),
    (
        "What should a healthy diet look like?",
        ["vegetables", "fibre", "diet", "nutrition", "fats", "dietitian"],
    ),
    ("How often should I exercise?", ["activity", "exercise", "movement", "strength", "warm up"]),
    ("I feel stressed and anxious at work", ["stress", "anxi", "breathing"]),
    ("I think I have the flu and a cough", ["flu", "fluids", "fever", "cold", "cough"]),
    ("Is my blood pressure of 150/95 high?", ["blood pressure", "120/80", "salt", "readings"]),
    ("How much water should I drink a day?", ["urine", "litres", "water", "hydrat", "fluid"]),
    ("What are early signs of diabetes?", ["blood sugar", "diabetes", "insulin", "glucose"]),
    ("My lower back hurts after sitting", ["back pain", "moving", "desk", "stretch"]),
    ("Pollen season makes my eyes itch", ["pollen", "allerg", "antihistamine"]),
]


@pytest.mark.parametrize(("question", "words"), TOPICS)
async def test_replies_are_topical_and_end_with_disclaimer(question: str, words: list[str]) -> None:
    text = await reply(question)
    assert any(word in text.lower() for word in words), text
    assert text.endswith(DISCLAIMER)
    assert EMERGENCY_GUIDANCE not in text


async def test_general_question_gets_general_answer() -> None:
    text = await reply("Tell me something useful about staying healthy")
    assert "check-ups" in text or "habits" in text or "appointment" in text
    assert text.endswith(DISCLAIMER)


@pytest.mark.parametrize(
    "question",
    [
        "I have crushing chest pain",
        "my dad can't breathe properly",
        "I think I took an overdose",
        "her face is drooping, is it a stroke?",
    ],
)
async def test_emergencies_get_emergency_guidance_first(question: str) -> None:
    text = await reply(question)
    assert text.startswith(EMERGENCY_GUIDANCE)
    assert text.endswith(DISCLAIMER)


@pytest.mark.parametrize("question", ["I have suicidal thoughts", "I want to end my life"])
async def test_crisis_gets_crisis_guidance_first(question: str) -> None:
    text = await reply(question)
    assert text.startswith(CRISIS_GUIDANCE)
    assert "988" in text


async def test_emergency_guidance_survives_a_tiny_token_budget() -> None:
    text = await reply("chest pain", max_new_tokens=5)
    # Within the budget (20 characters), the start of the emergency line comes first.
    assert EMERGENCY_GUIDANCE.startswith(text.removesuffix("…")) and len(text) <= 20
    assert (await reply("chest pain", max_new_tokens=120)).startswith(EMERGENCY_GUIDANCE)


async def test_deterministic_for_same_input_and_varies_by_model() -> None:
    first = await reply("How can I sleep better?")
    assert first == await reply("How can I sleep better?")
    bigger = await reply("How can I sleep better?", model="llama-2-13b-chat")
    assert bigger != first
    assert bigger.count("\n- ") > first.count("\n- ")


async def test_respects_max_new_tokens_roughly() -> None:
    long = await MockUpstream().generate(request("How can I sleep better?", max_new_tokens=1000))
    short = await MockUpstream().generate(request("How can I sleep better?", max_new_tokens=40))
    assert long.finish_reason == "stop"
    assert short.finish_reason == "length"
    assert len(short.text.split()) <= 40
    assert len(short.text.split()) < len(long.text.split())
    assert short.text.endswith(DISCLAIMER)


async def test_base_model_reply_has_no_chat_framing() -> None:
    text = await reply("How can I sleep better?", model="llama-2-7b")
    assert "Here are a few things that help" not in text


async def test_stream_concatenates_to_the_reply() -> None:
    upstream = MockUpstream()
    req = request("tips for hydration")
    chunks = [chunk async for chunk in upstream.stream(req)]
    assert len(chunks) > 10
    assert "".join(c.text for c in chunks) == (await upstream.generate(req)).text
    assert [c.finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].finish_reason == "stop"


def test_keywords_are_lowercase_for_the_lowercased_search() -> None:
    from proxy.upstreams import mock_replies

    patterns = [topic.pattern for topic in mock_replies.TOPICS]
    patterns += [mock_replies.EMERGENCY, mock_replies.CRISIS]
    for pattern in patterns:
        assert pattern.pattern == pattern.pattern.lower()
        assert not pattern.flags & re.IGNORECASE


@pytest.mark.parametrize("text", ["I have CHEST PAIN", "Chest Pains since noon"])
def test_emergency_phrases_match_in_any_case(text: str) -> None:
    from proxy.upstreams.mock_replies import emergency_guidance

    assert emergency_guidance(text) == EMERGENCY_GUIDANCE
