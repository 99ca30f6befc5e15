"""What a rejected body is told, field by field, for the shapes msgspec reports."""

from __future__ import annotations

import pytest

from proxy.errors import ClientError
from proxy.routes.bodies import parse_chat_request


def rejected(body: bytes) -> ClientError:
    with pytest.raises(ClientError) as caught:
        parse_chat_request(body, max_new_tokens_limit=512)
    return caught.value


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_name_the_field_they_were_sent_in(number: str) -> None:
    error = rejected(b'{"inputs": "x", "parameters": {"temperature": %s}}' % number.encode())
    assert (error.code, error.param) == ("invalid_json", "temperature")
    assert "NaN or infinite" in error.message


def test_a_number_too_large_to_be_finite_names_its_path() -> None:
    error = rejected(b'{"inputs": "x", "parameters": {"top_p": 1e999}}')
    assert (error.code, error.param) == ("invalid_json", "parameters.top_p")


def test_a_range_error_says_the_range_under_this_instances_limit_and_echoes_the_value() -> None:
    error = rejected(b'{"inputs": "x", "parameters": {"max_new_tokens": 0}}')
    assert error.status == 422 and error.param == "parameters.max_new_tokens"
    assert error.message == "parameters.max_new_tokens must be an integer from 1 to 512; got 0"


def test_an_unknown_field_lists_the_fields_allowed_where_it_was_sent() -> None:
    error = rejected(b'{"messages": [{"role": "user", "content": "x", "name": "me"}]}')
    assert (error.code, error.param) == ("unknown_field", "messages.0.name")
    assert error.message.endswith("allowed here: role, content")


def test_a_missing_field_is_named() -> None:
    error = rejected(b'{"messages": [{"role": "user"}]}')
    assert (error.code, error.param) == ("invalid_request", "messages.0.content")


def test_a_long_value_is_echoed_cut_short() -> None:
    error = rejected(b'{"inputs": "x", "parameters": {"temperature": %d}}' % (10**60))
    assert error.message.endswith("...") and len(error.message) < 140
