"""UPSTREAMS_FILE: several upstreams in one TOML file, one ``[[upstreams]]`` table each.

Read with the standard library's TOML parser and validated like every other setting; a bad
file stops start-up with a message that names the entry and the field. Imported only when
UPSTREAMS_FILE is set. Tokens never live in the file: ``token_env`` names the variable that
holds one, looked up by ``load`` in the environment the settings pass it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from proxy.config.values import (
    SPACE_ID,
    UpstreamKind,
    check_api_name,
    check_upstream_url,
)
from proxy.core.catalog import MODELS

# The settings an upstream's table may override, by their lower-cased names.
OVERRIDABLE = (
    "upstream_connect_timeout",
    "upstream_read_timeout",
    "upstream_timeout",
    "upstream_first_token_timeout",
    "upstream_retries",
    "upstream_retry_after_max",
    "upstream_max_connections",
    "max_concurrency",
    "queue_timeout",
    "circuit_failures",
    "circuit_cooldown",
    "circuit_probe_interval",
    "mock_latency_ms",
    "mock_token_delay_ms",
    "system_prompt",
)


class UpstreamEntry(BaseModel):
    """One ``[[upstreams]]`` table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][\w.-]{0,62}$")
    kind: UpstreamKind
    url: str | None = None
    models: tuple[str, ...] = ()
    priority: int = Field(0, ge=0, le=1000)
    weight: int = Field(1, ge=1, le=1000)
    token_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    space_api_name: str | None = None
    space_stream_api_name: str | None = None
    model_map: dict[str, str] = Field(default_factory=dict)
    # An OpenAI-compatible server that continues a partial assistant message (vLLM's
    # continue_final_message): it can continue a broken stream.
    assistant_prefill: bool = False
    space_id: str | None = None
    # Overrides of the global settings; None: the global value.
    upstream_connect_timeout: float | None = Field(None, gt=0)
    upstream_read_timeout: float | None = Field(None, gt=0)
    upstream_timeout: float | None = Field(None, gt=0)
    upstream_first_token_timeout: float | None = Field(None, gt=0)
    upstream_retries: int | None = Field(None, ge=0, le=10)
    upstream_retry_after_max: float | None = Field(None, ge=0)
    upstream_max_connections: int | None = Field(None, ge=1)
    max_concurrency: int | None = Field(None, ge=1)
    queue_timeout: float | None = Field(None, ge=0)
    circuit_failures: int | None = Field(None, ge=1)
    circuit_cooldown: float | None = Field(None, gt=0)
    circuit_probe_interval: float | None = Field(None, gt=0)
    mock_latency_ms: int | None = Field(None, ge=0, le=60000)
    mock_token_delay_ms: int | None = Field(None, ge=0, le=5000)
    system_prompt: str | None = None
    # Filled by ``load`` from the variable token_env names; never read from the file.
    token: SecretStr | None = Field(None, exclude=True)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return check_upstream_url(value)

    @field_validator("space_api_name", "space_stream_api_name")
    @classmethod
    def _check_api_name(cls, value: str | None) -> str | None:
        return check_api_name(value)

    @field_validator("models")
    @classmethod
    def _check_models(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        names = [spec.name for spec in MODELS]
        for model in value:
            if model not in names:
                raise ValueError(f"{model!r} is not a model; the models are {', '.join(names)}")
        return value

    def serves(self, model: str) -> bool:
        return not self.models or model in self.models

    def overrides(self) -> dict[str, Any]:
        """The global settings this table overrides, by name."""
        return {k: getattr(self, k) for k in OVERRIDABLE if getattr(self, k) is not None}


class UpstreamsFile(BaseModel):
    """The whole file: its ``[[upstreams]]`` tables, and nothing else."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    upstreams: tuple[UpstreamEntry, ...] = Field(min_length=1)


def _entry_name(data: Mapping[str, Any], index: int) -> str:
    tables = data.get("upstreams")
    if isinstance(tables, list) and index < len(tables) and isinstance(tables[index], dict):
        name = tables[index].get("name")
        if isinstance(name, str) and name:
            return f"entry {index + 1} ({name!r})"
    return f"entry {index + 1}"


def _describe(error: ValidationError, data: Mapping[str, Any]) -> str:
    lines = []
    for item in error.errors():
        loc = item["loc"]
        message = str(item["msg"]).removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] == "upstreams" and isinstance(loc[1], int):
            where = _entry_name(data, loc[1])
            field = ".".join(str(part) for part in loc[2:])
            if item["type"] == "extra_forbidden":
                message = "is not a setting of an upstream"
            lines.append(f"{where}, {field}: {message}" if field else f"{where}: {message}")
        else:
            lines.append(f"{'.'.join(str(p) for p in loc) or 'file'}: {message}")
    return "; ".join(lines)


def load(path: str, environment: Mapping[str, str]) -> tuple[UpstreamEntry, ...]:
    """The upstreams of the TOML file at ``path``, their tokens read from ``environment`` by
    ``token_env``; a ValueError that names the entry and the field when the file is missing,
    not TOML, or invalid."""
    where = f"UPSTREAMS_FILE {path}"
    if not Path(path).is_file():
        raise ValueError(f"{where}: no such file")
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{where} is not valid TOML: {exc}") from None
    tables = data.get("upstreams")
    if isinstance(tables, list):
        for index, table in enumerate(tables):
            if isinstance(table, dict) and "token" in table:
                raise ValueError(
                    f"{where}: {_entry_name(data, index)}: never put a token in the file; "
                    "set it in an environment variable and name that with token_env"
                )
    try:
        entries = UpstreamsFile(**data).upstreams
    except ValidationError as exc:
        raise ValueError(f"{where}: {_describe(exc, data)}") from None
    seen: set[str] = set()
    resolved = []
    for index, entry in enumerate(entries):
        label = f"{where}: entry {index + 1} ({entry.name!r})"
        if entry.name in seen:
            raise ValueError(f"{label}: name is used by an earlier entry; names must differ")
        seen.add(entry.name)
        if entry.kind != "mock" and entry.url is None:
            raise ValueError(f"{label}, url: a {entry.kind} upstream needs its URL or Space id")
        update: dict[str, Any] = {}
        if entry.token_env is not None:
            value = (environment.get(entry.token_env) or "").strip()
            if not value:
                raise ValueError(f"{label}, token_env: {entry.token_env} is not set")
            update["token"] = SecretStr(value)
        if entry.space_id is None and entry.url is not None:
            raw = tables[index].get("url", "") if isinstance(tables, list) else ""
            if isinstance(raw, str) and SPACE_ID.match(raw.strip()):
                update["space_id"] = raw.strip()
        resolved.append(entry.model_copy(update=update) if update else entry)
    return tuple(resolved)


def describe_order(entries: tuple[UpstreamEntry, ...]) -> dict[str, list[UpstreamEntry]]:
    """Per model, the upstreams that serve it in the order they are tried when all are
    well: priority first, then the larger weight."""
    return {
        spec.name: sorted(
            (e for e in entries if e.serves(spec.name)), key=lambda e: (e.priority, -e.weight)
        )
        for spec in MODELS
    }
