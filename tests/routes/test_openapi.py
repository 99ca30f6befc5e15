"""The OpenAPI document is built from the app: its own routes, each endpoint's Operation, and
the types the routes build their replies with."""

from __future__ import annotations

import pytest
from starlette.routing import Mount, Route

from proxy.app import create_app
from proxy.config.settings import Settings
from proxy.core.catalog import Catalog
from proxy.routes.openapi import UndocumentedRoute, build_openapi


def document_of(settings: Settings, routes: list[Route] | None = None) -> dict[str, object]:
    app = create_app(settings)
    return build_openapi(
        routes if routes is not None else app.routes,
        settings,
        Catalog(default=settings.default_model),
    )


def test_every_route_of_the_app_and_nothing_else_is_documented() -> None:
    settings = Settings()
    app = create_app(settings)
    document = document_of(settings)
    served = {
        (route.path.replace(":path}", "}"), method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    paths = document["paths"]
    assert isinstance(paths, dict)
    documented = {(path, method) for path, ops in paths.items() for method in ops}
    assert documented == served
    assert not any(isinstance(route, Mount) and route.path in paths for route in app.routes)
    ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_a_route_without_an_operation_stops_the_build() -> None:
    async def undocumented(request: object) -> None: ...

    with pytest.raises(UndocumentedRoute, match="/secret"):
        document_of(Settings(), [Route("/secret", undocumented)])


def test_reply_schemas_come_from_the_reply_types() -> None:
    document = document_of(Settings())
    schemas = document["components"]["schemas"]  # type: ignore[index]
    chat = document["paths"]["/api/chat"]["post"]["responses"]  # type: ignore[index]
    assert chat["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ChatReply"
    }
    assert chat["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorReply")
    completions = document["paths"]["/v1/chat/completions"]["post"]["responses"]  # type: ignore[index]
    assert completions["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/OpenAIErrorReply"
    )
    assert "422" not in completions  # OpenAI's clients expect a 400
    choice = schemas["CompletionChoice"]
    assert sorted(choice["properties"]["finish_reason"]["enum"]) == ["length", "stop"]
    assert sorted(schemas["ErrorReply"]["required"]) == ["code", "error"]


def test_request_schemas_carry_this_instances_limits() -> None:
    document = document_of(Settings(max_new_tokens_limit=300, max_prompt_chars=999))
    schemas = document["components"]["schemas"]  # type: ignore[index]
    tokens = schemas["Parameters"]["properties"]["max_new_tokens"]["anyOf"]
    assert {"type": "null"} in tokens and any(b.get("maximum") == 300 for b in tokens)
    inputs = schemas["ChatRequest"]["properties"]["inputs"]["anyOf"]
    assert any(b.get("maxLength") == 999 for b in inputs)
    for name in ("max_tokens", "max_completion_tokens"):
        branches = schemas["CompletionRequest"]["properties"][name]["anyOf"]
        assert any(b.get("maximum") == 300 for b in branches)
    model = schemas["CompletionRequest"]["properties"]["model"]
    assert "llama-2-7b-chat" in model["enum"] and "meta-llama/Llama-2-7b-chat-hf" in model["enum"]
