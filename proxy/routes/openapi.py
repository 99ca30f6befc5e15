"""The gateway's OpenAPI 3.1 description, served at ``GET /openapi.json``.

Built from the app itself: its route list gives the paths and methods, each endpoint's
``Operation`` (``web/operations.py``) what it answers, and the schemas come from the types the
code uses: request bodies from the msgspec structs the routes decode into, replies from the
TypedDicts the routes build (``replies.py``). The settings narrow the request schemas to the
limits this instance enforces (models, ``max_new_tokens``, prompt length). The fuzzing tests
hold every response to this document.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Route

from proxy._version import __version__
from proxy.config.settings import Settings
from proxy.core.catalog import Catalog
from proxy.web.operations import JSON, Operation, Reply, operation_of
from proxy.web.responses import OPENAI_PREFIX, ErrorReply, OpenAIErrorReply

SSE = "text/event-stream"
REF = "#/components/schemas/{name}"
SECURITY_SCHEMES = {
    "apiKey": "one of API_KEYS",
    "metricsToken": "METRICS_TOKEN",
    "adminToken": "ADMIN_TOKEN",
}


# Starlette's path parameters, converter included: {model_id:path}.
_PATH_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


class UndocumentedRoute(Exception):
    """A route whose endpoint carries no ``Operation``."""


def documented_routes(routes: Sequence[BaseRoute]) -> list[tuple[Route, Operation]]:
    """Every endpoint route of the app with its operation (mounts such as /static are not
    operations); raises UndocumentedRoute for a route that documents nothing."""
    found = []
    for route in routes:
        if not isinstance(route, Route):
            continue
        operation = operation_of(route.endpoint)
        if operation is None:
            raise UndocumentedRoute(f"{route.path} has no Operation; see proxy/web/operations.py")
        found.append((route, operation))
    return found


def _schemas(types: list[type]) -> dict[str, Any]:
    """JSON Schemas of ``types`` (msgspec structs or TypedDicts) and what they refer to,
    keyed by type name."""
    _, components = msgspec.json.schema_components(types, ref_template=REF)
    return dict(components)


def _non_null(schema: dict[str, Any]) -> dict[str, Any]:
    """The branch of an optional field's schema that is not ``null``."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") != "null":
            return dict(branch)
    raise ValueError(f"no non-null branch in {schema}")


def _narrow(schemas: dict[str, Any], settings: Settings, catalog: Catalog) -> None:
    """The request schemas, narrowed to this instance's models and limits."""
    names = [name for spec in catalog.models for name in (spec.name, spec.hub_id)]
    model = {"type": "string", "enum": names, "description": "public name or Hub id"}
    optional_model = {"anyOf": [model, {"type": "null"}], "default": None}
    limit = settings.max_new_tokens_limit

    def capped(schema: dict[str, Any], **bounds: int) -> dict[str, Any]:
        return {**schema, "anyOf": [{**_non_null(schema), **bounds}, {"type": "null"}]}

    params = schemas["Parameters"]["properties"]
    params["model"] = optional_model
    params["max_new_tokens"] = capped(params["max_new_tokens"], maximum=limit)
    chat = schemas["ChatRequest"]
    chat["description"] = (
        "inputs (a string) or messages (a list with at least one non-empty user message), "
        "not both; parameters and model are optional"
    )
    chat["anyOf"] = [{"required": ["inputs"]}, {"required": ["messages"]}]
    chat["properties"]["model"] = optional_model
    chat["properties"]["inputs"] = capped(
        chat["properties"]["inputs"], maxLength=settings.max_prompt_chars
    )
    completion = schemas["CompletionRequest"]["properties"]
    completion["model"] = model
    for name in ("max_tokens", "max_completion_tokens"):
        completion[name] = capped(completion[name], maximum=limit)


def _ref(t: type) -> dict[str, str]:
    return {"$ref": REF.format(name=t.__name__)}


def _reply(reply: Reply) -> dict[str, Any]:
    if reply.body is None:
        return {
            "description": reply.description,
            "content": {reply.media_type: {"schema": {"type": "string"}}},
        }
    body = {"type": "object"} if reply.body is dict else _ref(reply.body)
    content: dict[str, Any] = {reply.media_type: {"schema": body}}
    if reply.events is not None:
        content[SSE] = {"schema": _sse_event(reply.events)}
    return {"description": reply.description, "content": content}


def _sse_event(names: tuple[str, ...]) -> dict[str, Any]:
    """One Server-Sent Event: named ``names``, or unnamed (OpenAI's ``data:`` lines)."""
    properties: dict[str, Any] = {"data": {"type": "string", "description": "JSON, or [DONE]"}}
    if names:
        properties["event"] = {"enum": list(names)}
    return {"type": "object", "required": ["data"], "properties": properties}


def _operation(path: str, operation: Operation) -> dict[str, Any]:
    error = OpenAIErrorReply if path.startswith(OPENAI_PREFIX) else ErrorReply
    responses = {str(status): _reply(reply) for status, reply in operation.replies.items()}
    for status, why in operation.errors.items():
        responses[str(status)] = {"description": why, "content": {JSON: {"schema": _ref(error)}}}
    document: dict[str, Any] = {
        "operationId": operation.id,
        "summary": operation.summary,
        "responses": responses,
    }
    names = _PATH_PARAM.findall(path)
    if names:
        document["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in names
        ]
    if operation.request is not None:
        document["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": _ref(operation.request)}},
        }
    if operation.auth is not None:
        document["security"] = [{}] * operation.auth_optional + [{operation.auth: []}]
    return document


def build_openapi(
    routes: Sequence[BaseRoute], settings: Settings, catalog: Catalog
) -> dict[str, Any]:
    """The OpenAPI document of an app with ``routes`` built with ``settings``."""
    paths: dict[str, dict[str, Any]] = {}
    types: list[type] = [ErrorReply, OpenAIErrorReply]
    for route, operation in documented_routes(routes):
        for method in sorted(route.methods or ()):
            if method != "HEAD":  # Starlette adds HEAD to every GET
                template = _PATH_PARAM.sub(r"{\1}", route.path)
                paths.setdefault(template, {})[method.lower()] = _operation(route.path, operation)
        types += [r.body for r in operation.replies.values() if r.body not in (None, dict)]
        if operation.request is not None:
            types.append(operation.request)
    schemas = _schemas(list(dict.fromkeys(types)))
    _narrow(schemas, settings, catalog)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "proxy: an LLM gateway for browser apps and Llama 2 Spaces",
            "version": __version__,
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                name: {"type": "http", "scheme": "bearer", "description": description}
                for name, description in SECURITY_SCHEMES.items()
            },
        },
    }
