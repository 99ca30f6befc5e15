"""The gateway's OpenAPI 3.1 description, served at ``GET /openapi.json``.

Request bodies come from the same pydantic models the routes validate with, so the document
cannot drift from the code; the settings fill in the limits (models, ``max_new_tokens``,
prompt length) this instance enforces. The fuzzing tests hold every response to it.
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from proxy._version import __version__
from proxy.catalog import Catalog
from proxy.routes.openai_api import CompletionRequest
from proxy.schemas import ChatRequest
from proxy.settings import Settings

JSON = "application/json"
SSE = "text/event-stream"
REF = "#/components/schemas/{model}"

ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error of the gateway's own routes: what is wrong and how to fix it.",
    "required": ["error", "code"],
    "properties": {
        "error": {"type": "string"},
        "code": {"type": "string", "description": "stable, machine-readable"},
        "request_id": {"type": "string"},
    },
}
OPENAI_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "string"},
            },
        }
    },
}
CHAT_RESPONSE_SCHEMA = {
    "type": "object",
    "required": ["generated_text", "model"],
    "properties": {"generated_text": {"type": "string"}, "model": {"type": "string"}},
}
COMPLETION_SCHEMA = {
    "type": "object",
    "required": ["id", "object", "created", "model", "choices", "usage"],
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "chat.completion"},
        "created": {"type": "integer"},
        "model": {"type": "string"},
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "message": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"const": "assistant"},
                            "content": {"type": "string"},
                        },
                    },
                    "finish_reason": {"enum": ["stop", "length"]},
                },
            },
        },
        "usage": {
            "type": "object",
            "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
            "properties": {
                name: {"type": "integer"}
                for name in ("prompt_tokens", "completion_tokens", "total_tokens")
            },
        },
    },
}
MODELS_SCHEMA = {
    "type": "object",
    "required": ["models", "default", "upstream", "test_mode", "limits"],
    "properties": {
        "models": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "hub_id", "type", "context_length", "defaults"],
                "properties": {
                    "id": {"type": "string"},
                    "hub_id": {"type": "string"},
                    "type": {"enum": ["chat", "base"]},
                    "context_length": {"type": "integer"},
                    "defaults": {"type": "object"},
                },
            },
        },
        "default": {"type": "string"},
        "upstream": {"type": "string"},
        "test_mode": {"type": "boolean"},
        "limits": {"type": "object"},
    },
}
OPENAI_MODELS_SCHEMA = {
    "type": "object",
    "required": ["object", "data"],
    "properties": {
        "object": {"const": "list"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "object", "created", "owned_by"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"const": "model"},
                    "created": {"type": "integer"},
                    "owned_by": {"type": "string"},
                },
            },
        },
    },
}
STATUS_SCHEMA = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string"}},
}

# Why each error status can happen on a generation route.
GENERATION_ERRORS = {
    "400": "malformed JSON, wrong shape, unknown field or unknown model",
    "401": "API_KEYS is set and the key is missing or wrong",
    "403": "the browser's Origin is not in ALLOWED_ORIGINS",
    "413": "the body is over MAX_BODY_BYTES",
    "415": "the body is not application/json",
    "422": "a value out of range, an empty prompt or one over MAX_PROMPT_CHARS",
    "429": "a rate limit (ours or the upstream's); see Retry-After",
    "500": "a bug; the details are in the log under the request id",
    "502": "the upstream failed, answered garbage, or refused our token",
    "503": "the upstream is busy, starting or unavailable, or the queue is full",
    "504": "the upstream did not answer in time",
}


def _sse_event(names: list[str] | None) -> dict[str, Any]:
    """One Server-Sent Event: named ``names``, or unnamed (OpenAI's ``data:`` lines)."""
    properties: dict[str, Any] = {"data": {"type": "string", "description": "JSON, or [DONE]"}}
    if names is not None:
        properties["event"] = {"enum": names}
    return {"type": "object", "required": ["data"], "properties": properties}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _errors(codes: dict[str, str], schema_name: str = "Error") -> dict[str, Any]:
    ref = {"$ref": REF.format(model=schema_name)}
    return {code: _json(ref, why) for code, why in codes.items()}


def _request_schemas(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    """The routes' own pydantic models as JSON Schema, narrowed to this instance's limits."""
    _, top = models_json_schema(
        [(ChatRequest, "validation"), (CompletionRequest, "validation")], ref_template=REF
    )
    schemas: dict[str, Any] = top["$defs"]
    names = [name for spec in catalog.models for name in (spec.name, spec.hub_id)]
    model = {"type": "string", "enum": names, "description": "public name or Hub id"}
    limit = settings.max_new_tokens_limit
    params = schemas["Parameters"]["properties"]
    params["model"] = {"anyOf": [model, {"type": "null"}], "default": None}
    params["max_new_tokens"]["anyOf"][0]["maximum"] = limit
    schemas["ChatRequest"]["description"] = (
        "inputs (a string) or messages (a list with at least one non-empty user message), "
        "not both; parameters and model are optional"
    )
    schemas["ChatRequest"]["anyOf"] = [{"required": ["inputs"]}, {"required": ["messages"]}]
    chat = schemas["ChatRequest"]["properties"]
    chat["model"] = {"anyOf": [model, {"type": "null"}], "default": None}
    chat["inputs"]["anyOf"][0]["maxLength"] = settings.max_prompt_chars
    completion = schemas["CompletionRequest"]["properties"]
    completion["model"] = model
    for field in ("max_tokens", "max_completion_tokens"):
        completion[field]["anyOf"][0]["maximum"] = limit
    return schemas


def build_openapi(settings: Settings, catalog: Catalog) -> dict[str, Any]:
    """The OpenAPI document of an app built with ``settings``."""
    schemas = _request_schemas(settings, catalog)
    schemas.update(
        Error=ERROR_SCHEMA,
        OpenAIError=OPENAI_ERROR_SCHEMA,
        ChatResponse=CHAT_RESPONSE_SCHEMA,
        ChatCompletion=COMPLETION_SCHEMA,
    )
    chat_operation = {
        "summary": "Generate a reply (the seed's API), as JSON or Server-Sent Events",
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": REF.format(model="ChatRequest")}}},
        },
        "responses": {
            "200": {
                "description": "the reply; with stream or Accept: text/event-stream, SSE events "
                "token, replace, done or error",
                "content": {
                    JSON: {"schema": {"$ref": REF.format(model="ChatResponse")}},
                    SSE: {"schema": _sse_event(["token", "replace", "done", "error"])},
                },
            },
            **_errors(GENERATION_ERRORS),
        },
        "security": [{}, {"apiKey": []}],
    }
    # OpenAI answers every invalid request with 400, so this route has no 422.
    openai_errors = {k: v for k, v in GENERATION_ERRORS.items() if k != "422"}
    paths: dict[str, Any] = {
        "/api/chat": {"post": {**chat_operation, "operationId": "chat"}},
        "/api/predict": {"post": {**chat_operation, "operationId": "predict"}},
        "/v1/chat/completions": {
            "post": {
                "operationId": "chatCompletions",
                "summary": "OpenAI-compatible chat completion, JSON or a data: stream",
                "requestBody": {
                    "required": True,
                    "content": {JSON: {"schema": {"$ref": REF.format(model="CompletionRequest")}}},
                },
                "responses": {
                    "200": {
                        "description": "the completion, or with stream a data: stream ending "
                        "in [DONE]",
                        "content": {
                            JSON: {"schema": {"$ref": REF.format(model="ChatCompletion")}},
                            SSE: {"schema": _sse_event(None)},
                        },
                    },
                    **_errors(openai_errors, "OpenAIError"),
                },
                "security": [{}, {"apiKey": []}],
            }
        },
        "/api/models": {
            "get": {
                "operationId": "models",
                "summary": "The Llama 2 models, their Hub ids, defaults and limits",
                "responses": {"200": _json(MODELS_SCHEMA, "the catalogue")},
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "openaiModels",
                "summary": "The models in OpenAI's list shape",
                "responses": {"200": _json(OPENAI_MODELS_SCHEMA, "the models")},
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: 200 while the process serves",
                "responses": {"200": _json(STATUS_SCHEMA, "alive")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness of the upstream",
                "responses": {
                    "200": _json(STATUS_SCHEMA, "ready"),
                    "503": _json(
                        {**ERROR_SCHEMA, "required": ["error", "code", "status"]},
                        "not ready: the reason, with Retry-After",
                    ),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (Bearer METRICS_TOKEN when it is set)",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors({"401": "METRICS_TOKEN is set and was not sent"}),
                },
                "security": [{}, {"metricsToken": []}],
            }
        },
        "/api/cache": {
            "delete": {
                "operationId": "clearCache",
                "summary": "Empty the cache (Bearer ADMIN_TOKEN; 404 while it is unset)",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["status", "entries"],
                            "properties": {
                                "status": {"const": "cleared"},
                                "entries": {"type": "integer"},
                            },
                        },
                        "cleared",
                    ),
                    **_errors(
                        {
                            "401": "the admin token is missing or wrong",
                            "404": "ADMIN_TOKEN is unset",
                            "503": "the cache backend is unavailable",
                        }
                    ),
                },
                "security": [{"adminToken": []}],
            }
        },
        "/": {
            "get": {
                "operationId": "demoPage",
                "summary": "The demo chat page",
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            }
        },
    }
    bearer = {"type": "http", "scheme": "bearer"}
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
                "apiKey": {**bearer, "description": "one of API_KEYS"},
                "metricsToken": {**bearer, "description": "METRICS_TOKEN"},
                "adminToken": {**bearer, "description": "ADMIN_TOKEN"},
            },
        },
    }
