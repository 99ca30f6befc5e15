"""Property-based fuzzing: schemathesis drives every route of the gateway's own
``/openapi.json`` on a real socket, and hypothesis throws arbitrary bodies and headers at the
generation routes. Whatever arrives, the answer is never a 5xx, always within the document
(status, content type, body schema), and every error has the JSON error shape."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation.case import Case

from proxy import Settings
from proxy.app import create_app
from proxy.core.catalog import Catalog
from proxy.routes.openapi import build_openapi
from tests.e2e.conftest import gateway_server

pytestmark = pytest.mark.e2e

# Derandomized in CI (the CI variable is set there): the same examples on every run, so a red
# CI means a regression, never bad luck. Locally each run explores new examples.
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    derandomize=bool(os.environ.get("CI")),
)


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    # Test mode, no rate limit (the fuzzer sends thousands of requests) and an admin token,
    # so DELETE /api/cache exists and its 401 is exercised too.
    with gateway_server(**FUZZED_SETTINGS) as url:
        yield url


# The document the fuzzed gateway serves (test_the_document_is_the_one_served checks that it
# is); built here because schemathesis's lazy fixture loading does not work on pytest 9.2.
FUZZED_SETTINGS = {"rate_limit": "off", "mock_token_delay_ms": 0, "admin_token": "admin-secret"}
_settings = Settings(**FUZZED_SETTINGS)
DOCUMENT = build_openapi(
    create_app(_settings).routes, _settings, Catalog(default=_settings.default_model)
)
schema = schemathesis.openapi.from_dict(DOCUMENT)


def assert_error_shape(response: Any, path: str) -> None:
    body = response.json()
    # Everything under /v1/ answers in OpenAI's shape, the router's own 404/405 included.
    if path.startswith("/v1/"):
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str) and error["message"] and error["code"]
    else:
        assert isinstance(body["error"], str) and body["error"]
        assert isinstance(body["code"], str) and body["code"]


@schema.parametrize()
@FUZZ
def test_every_route_keeps_to_its_openapi_document(gateway_url: str, case: Case) -> None:
    response = case.call_and_validate(
        base_url=gateway_url,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
        ],
        timeout=10,
    )
    assert response.headers.get("x-request-id")
    if response.status_code >= 400:
        assert_error_shape(response, case.operation.path)


def test_the_document_is_the_one_served(gateway_url: str) -> None:
    assert httpx.get(f"{gateway_url}/openapi.json").json() == DOCUMENT


def test_the_document_describes_every_route(gateway_url: str) -> None:
    document = httpx.get(f"{gateway_url}/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/", "/api/chat", "/api/predict", "/api/models", "/api/cache", "/v1/chat/completions",
        "/v1/models", "/v1/models/{model_id}", "/healthz", "/readyz", "/metrics", "/openapi.json",
    }  # fmt: skip
    chat = document["components"]["schemas"]["ChatRequest"]
    assert set(chat["properties"]) == {"inputs", "messages", "parameters", "model", "stream",
                                       "options"}  # fmt: skip
    limit = document["components"]["schemas"]["Parameters"]["properties"]["max_new_tokens"]
    assert limit["anyOf"][0]["maximum"] == 1024


# JSON has no NaN or Infinity: httpx refuses to encode them, so they are sent as raw bytes below.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
# Bodies a browser bug or an attacker might send: JSON of any shape, objects that look almost
# right, and raw bytes.
bodies = st.one_of(
    json_values.map(lambda value: httpx.Request("POST", "/", json=value).content),
    st.fixed_dictionaries(
        {},
        optional={
            "inputs": json_values,
            "messages": json_values,
            "parameters": st.dictionaries(
                st.sampled_from(["model", "max_new_tokens", "temperature", "top_p", "do_sample"]),
                json_values,
            ),
            "model": json_values,
            "stream": json_values,
        },
    ).map(lambda value: httpx.Request("POST", "/", json=value).content),
    st.binary(max_size=200),
)
content_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/x+json"]
)


@given(
    path=st.sampled_from(["/api/chat", "/api/predict", "/v1/chat/completions"]),
    body=bodies,
    content_type=content_types,
    accept=st.sampled_from(["application/json", "text/event-stream", "*/*"]),
)
@FUZZ
def test_arbitrary_bodies_get_a_json_error_or_a_reply(
    gateway_url: str, path: str, body: bytes, content_type: str, accept: str
) -> None:
    headers = {"Accept": accept}
    if content_type:
        headers["Content-Type"] = content_type
    response = httpx.post(f"{gateway_url}{path}", content=body, headers=headers, timeout=10)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json")
        assert_error_shape(response, path)
    else:
        assert response.headers["x-upstream"] == "mock"


NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]


@pytest.mark.parametrize("number", NON_FINITE)
@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/api/chat", '{"inputs": "x", "parameters": {"temperature": %s}}'),
        ("/api/chat", '{"inputs": "x", "parameters": {"top_p": %s}}'),
        ("/api/chat", '{"inputs": "x", "options": {"wait_for_model": %s}}'),
        ("/api/predict", '{"inputs": "x", "parameters": {"max_new_tokens": %s}}'),
        ("/v1/chat/completions", '{"model": "llama-2-7b-chat", "temperature": %s, '
         '"messages": [{"role": "user", "content": "x"}]}'),
        ("/v1/chat/completions", '{"model": "llama-2-7b-chat", "top_p": %s, '
         '"messages": [{"role": "user", "content": "x"}]}'),
    ],
)  # fmt: skip
def test_non_finite_numbers_are_bad_input(
    gateway_url: str, path: str, template: str, number: str
) -> None:
    body = (template % number).encode()
    response = httpx.post(
        f"{gateway_url}{path}",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert_error_shape(response, path)
