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

from proxy.config.fields import Check, ConfigError, Record, Secret, field
from proxy.config.values import (
    SPACE_ID,
    UpstreamKind,
    check_api_name,
    check_model,
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


class UpstreamEntry(Record):
    """One ``[[upstreams]]`` table."""

    name: str = field(pattern=r"^[A-Za-z0-9][\w.-]{0,62}$")
    kind: UpstreamKind = field()
    url: str | None = field(None)
    models: tuple[str, ...] = field(())
    priority: int = field(0, ge=0, le=1000)
    weight: int = field(1, ge=1, le=1000)
    token_env: str | None = field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    space_api_name: str | None = field(None)
    space_stream_api_name: str | None = field(None)
    model_map: dict[str, str] = field(default_factory=dict)
    # An OpenAI-compatible server that continues a partial assistant message (vLLM's
    # continue_final_message): it can continue a broken stream.
    assistant_prefill: bool = field(False)
    space_id: str | None = field(None)
    # Overrides of the global settings; None: the global value.
    upstream_connect_timeout: float | None = field(None, gt=0)
    upstream_read_timeout: float | None = field(None, gt=0)
    upstream_timeout: float | None = field(None, gt=0)
    upstream_first_token_timeout: float | None = field(None, gt=0)
    upstream_retries: int | None = field(None, ge=0, le=10)
    upstream_retry_after_max: float | None = field(None, ge=0)
    upstream_max_connections: int | None = field(None, ge=1)
    max_concurrency: int | None = field(None, ge=1)
    queue_timeout: float | None = field(None, ge=0)
    circuit_failures: int | None = field(None, ge=1)
    circuit_cooldown: float | None = field(None, gt=0)
    circuit_probe_interval: float | None = field(None, gt=0)
    mock_latency_ms: int | None = field(None, ge=0, le=60000)
    mock_token_delay_ms: int | None = field(None, ge=0, le=5000)
    system_prompt: str | None = field(None)
    # Filled by ``load`` from the variable token_env names; never read from the file.
    token: Secret | None = field(None)

    def serves(self, model: str) -> bool:
        return not self.models or model in self.models

    def overrides(self) -> dict[str, Any]:
        """The global settings this table overrides, by name."""
        return {k: getattr(self, k) for k in OVERRIDABLE if getattr(self, k) is not None}


_AFTER: dict[str, Check] = {
    "url": check_upstream_url,
    "space_api_name": check_api_name,
    "space_stream_api_name": check_api_name,
    "models": lambda models: tuple(map(check_model, models)),
}


def _entry_name(tables: list[Any], index: int) -> str:
    name = tables[index].get("name") if isinstance(tables[index], dict) else None
    return (
        f"entry {index + 1} ({name!r})" if isinstance(name, str) and name else f"entry {index + 1}"
    )


def _entries(data: Mapping[str, Any]) -> tuple[UpstreamEntry, ...]:
    """The checked tables of the file; a ValueError naming every invalid entry and field."""
    unknown = [key for key in data if key != "upstreams"]
    if unknown:
        raise ValueError(f"{unknown[0]}: is not a part of the file; write [[upstreams]] tables")
    tables = data.get("upstreams")
    if not isinstance(tables, list) or not tables:
        raise ValueError("upstreams: the file needs at least one [[upstreams]] table")
    entries, problems = [], []
    for index, table in enumerate(tables):
        where = _entry_name(tables, index)
        if not isinstance(table, dict):
            problems.append(f"{where}: must be a [[upstreams]] table")
            continue
        try:
            entries.append(
                UpstreamEntry(**UpstreamEntry.build(table, after=_AFTER, forbid_extra=True))
            )
        except ConfigError as exc:
            for (field_name, *_), message in exc.problems:
                if message == "is not a setting":
                    message = "is not a setting of an upstream"
                problems.append(f"{where}, {field_name}: {message}")
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(entries)


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
                    f"{where}: {_entry_name(tables, index)}: never put a token in the file; "
                    "set it in an environment variable and name that with token_env"
                )
    try:
        entries = _entries(data)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
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
            update["token"] = Secret(value)
        if entry.space_id is None and entry.url is not None:
            raw = tables[index].get("url", "") if isinstance(tables, list) else ""
            if isinstance(raw, str) and SPACE_ID.match(raw.strip()):
                update["space_id"] = raw.strip()
        resolved.append(entry.replace(**update) if update else entry)
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
