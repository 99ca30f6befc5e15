"""What the gateway keeps of a Space's reply: no echo of the prompt, nothing past the budget."""

from __future__ import annotations

from proxy.core.catalog import Catalog
from proxy.core.generation import estimate_tokens
from proxy.routes.bodies import to_generation_request
from proxy.upstreams.gradio_reply import ReplyFilter
from tests.support.bodies import chat_body

PROMPT = "<s>[INST] <<SYS>>\nBe kind.\n<</SYS>>\n\nWhy sleep? [/INST]"
CATALOG = Catalog(default="llama-2-7b-chat")


def request(max_new_tokens: int = 100):  # type: ignore[no-untyped-def]
    body = chat_body(inputs="Why sleep?", parameters={"max_new_tokens": max_new_tokens})
    return to_generation_request(
        body, CATALOG, max_prompt_chars=1000, max_new_tokens_limit=1024, system_prompt="S"
    )


def test_a_reply_that_repeats_the_prompt_is_given_back_without_it() -> None:
    shown = ReplyFilter(PROMPT, request(), budget_taken=True, templated=True)
    assert shown.view(PROMPT + " Because rest.", final=True).text == "Because rest."
    # With a BOS of the app's own in front.
    assert shown.view("<s> " + PROMPT + " Rest.", final=True).text == "Rest."


def test_a_stream_holds_back_while_it_may_still_be_the_prompt() -> None:
    shown = ReplyFilter(PROMPT, request(), budget_taken=True, templated=True)
    assert shown.view(PROMPT[:10], final=False).text == ""
    assert shown.view(PROMPT, final=False).text == ""
    assert shown.view(PROMPT + " Rest", final=False).text == "Rest"
    # A reply that merely starts like the prompt is the reply.
    assert shown.view("<s>[INST] is a token", final=False).text == "<s>[INST] is a token"


def test_a_short_chat_message_at_the_start_of_a_reply_is_not_an_echo() -> None:
    shown = ReplyFilter("Hello", request(), budget_taken=True, templated=False)
    assert shown.view("Hello! How can I help?", final=True).text == "Hello! How can I help?"


def test_without_a_budget_parameter_the_gateway_cuts_at_max_new_tokens() -> None:
    shown = ReplyFilter("hi", request(5), budget_taken=False, templated=False)
    view = shown.view("one two three four five six seven eight nine", final=False)
    assert view.cut and view.text == "one two three four"
    assert estimate_tokens(view.text) <= 5
    assert not shown.view("one two", final=False).cut


def test_an_app_that_takes_the_budget_is_cut_only_when_it_plainly_ignores_it() -> None:
    shown = ReplyFilter("hi", request(5), budget_taken=True, templated=False)
    assert not shown.view("x" * 40, final=True).cut  # 10 estimated tokens: within 2x
    assert shown.view("x" * 41, final=True).cut
