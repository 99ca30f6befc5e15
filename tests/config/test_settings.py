"""Settings: environment parsing, Space ids, and start-up errors that name the variable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import proxy
from proxy.config.environment import describe_error
from proxy.config.fields import ConfigError
from proxy.config.settings import Settings
from proxy.serving.server import worker_count


def error_text(**values: object) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings(**values)
    return describe_error(caught.value)


def test_defaults_are_test_mode_on_localhost() -> None:
    settings = Settings()
    assert settings.effective_upstream == "mock"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.allowed_origins == ("http://localhost:*", "http://127.0.0.1:*")


def test_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_URL", "https://example-space.hf.space/")
    monkeypatch.setenv("HF_TOKEN", "hf_abc")
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("SPACE_API_NAME", "generate")
    monkeypatch.setenv("PORT", "9001")
    settings = Settings()
    assert settings.upstream_url == "https://example-space.hf.space"
    assert settings.effective_upstream == "gradio"
    assert settings.hf_token_value == "hf_abc"
    assert "hf_abc" not in repr(settings)
    assert settings.allowed_origins == ("https://a.example", "https://b.example")
    assert settings.space_api_name == "/generate"
    assert settings.port == 9001


def test_variables_in_any_case_and_arguments_over_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("max_body_bytes", "2048")  # names are not case-sensitive
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("UPSTREAM_MODEL_MAP", "llama-2-7b-chat=meta-llama/Llama-2-7b-chat-hf")
    monkeypatch.setenv("NOT_A_SETTING", "ignored")
    settings = Settings(port=9002)  # the command line's --port wins over PORT
    assert (settings.max_body_bytes, settings.port) == (2048, 9002)
    assert settings.upstream_model_map == {"llama-2-7b-chat": "meta-llama/Llama-2-7b-chat-hf"}
    monkeypatch.setenv("CACHE_ENABLED", "off")
    assert Settings().cache_enabled is False
    monkeypatch.setenv("PORT", "eighty")
    with pytest.raises(ConfigError) as caught:
        Settings()
    assert describe_error(caught.value).startswith("invalid configuration:\n  PORT:")


def test_space_id_resolves_to_its_url() -> None:
    settings = Settings(upstream_url="Health_Org/llama2.chat")
    assert settings.upstream_url == "https://health-org-llama2-chat.hf.space"


def test_test_mode_forces_mock() -> None:
    assert Settings(upstream_url="https://x.hf.space", test_mode=True).effective_upstream == "mock"


def test_only_an_upstream_reached_over_http_needs_the_http_client(tmp_path: Path) -> None:
    assert not Settings().reaches_upstreams
    assert not Settings(upstream_url="https://x.hf.space", test_mode=True).reaches_upstreams
    assert Settings(upstream_url="https://x.hf.space").reaches_upstreams
    listed = tmp_path / "upstreams.toml"
    listed.write_text('[[upstreams]]\nname = "demo"\nkind = "mock"\n')
    assert not Settings(upstreams_file=str(listed)).reaches_upstreams
    listed.write_text(
        '[[upstreams]]\nname = "demo"\nkind = "mock"\n\n'
        '[[upstreams]]\nname = "space"\nkind = "gradio"\nurl = "https://x.hf.space"\n'
    )
    assert Settings(upstreams_file=str(listed)).reaches_upstreams


@pytest.mark.parametrize(
    ("values", "words"),
    [
        ({"upstream_url": "ftp://nope"}, ["UPSTREAM_URL", "owner/name"]),
        ({"port": "eighty"}, ["PORT"]),
        ({"upstream_kind": "bedrock"}, ["UPSTREAM_KIND", "gradio", "mock"]),
        ({"allowed_origins": "https://a.example/path"}, ["ALLOWED_ORIGINS", "no path"]),
        ({"allowed_origins": "*, https://a.example"}, ["ALLOWED_ORIGINS", "'*'"]),
        ({"allowed_origins": "*", "cors_allow_credentials": True}, ["CORS_ALLOW_CREDENTIALS"]),
        ({"upstream_kind": "gradio"}, ["UPSTREAM_URL"]),
        ({"space_api_name": "/bad name"}, ["SPACE_API_NAME"]),
        ({"max_new_tokens_limit": 4096}, ["MAX_NEW_TOKENS_LIMIT"]),
        ({"default_model": "gpt-4"}, ["DEFAULT_MODEL", "llama-2-7b-chat"]),
    ],
)
def test_bad_values_name_the_variable(values: dict[str, object], words: list[str]) -> None:
    text = error_text(**values)
    for word in words:
        assert word in text


@pytest.mark.parametrize(
    ("env", "workers"),
    [
        ({"web_concurrency": "2"}, 1),  # limits and cache per process: one worker, exact
        ({"web_concurrency": "2", "redis_url": "redis://r:6379/0"}, 2),
        ({"web_concurrency": "3", "rate_limit": "off", "cache_enabled": "0"}, 3),
        ({"web_concurrency": "2", "rate_limit": "off"}, 1),  # the cache would still split
        ({"web_concurrency": ""}, 1),  # set but empty, as some platforms leave it
        ({}, 1),
    ],
)
def test_workers_only_where_no_limit_gets_looser(env: dict[str, str], workers: int) -> None:
    assert worker_count(Settings(**env)) == workers  # type: ignore[arg-type]


def test_web_concurrency_must_be_a_worker_count() -> None:
    with pytest.raises(ConfigError) as info:
        Settings(web_concurrency="0")  # type: ignore[arg-type]
    assert "WEB_CONCURRENCY" in describe_error(info.value)


def environment_uses(tree: ast.Module) -> list[tuple[int, str]]:
    """Every use of os.environ or os.getenv in a module: (line, "read" or "write")."""
    writes = {"update", "setdefault", "pop", "clear"}
    uses = []
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "getenv":
            uses.append((node.lineno, "read"))
        if not (isinstance(node, ast.Attribute) and node.attr == "environ"):
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store):
            uses.append((node.lineno, "write"))
        elif isinstance(parent, ast.Attribute) and parent.attr in writes:
            uses.append((node.lineno, "write"))
        else:
            uses.append((node.lineno, "read"))
    return uses


def test_only_the_environment_module_reads_the_environment_and_never_writes_it() -> None:
    package = Path(proxy.__file__).parent
    found = {}
    for path in sorted(package.rglob("*.py")):
        uses = environment_uses(ast.parse(path.read_text(), str(path)))
        if uses:
            found[path.relative_to(package).as_posix()] = uses
    reader = "config/environment.py"
    reads = {name for name, uses in found.items() if any(u[1] == "read" for u in uses)}
    assert reads == {reader}, f"only {reader} reads the environment"
    assert all(use == "read" for _, use in found[reader]), f"{reader} never writes it"
    # The two writers: the metrics directory the workers inherit, and the Hub's quiet flags.
    assert set(found) - {reader} == {"serving/server.py", "inspect.py"}


def test_every_invalid_variable_is_reported_at_once_with_what_to_write() -> None:
    text = error_text(port="eighty", max_body_bytes="12", cache_enabled="maybe", log_level="loud")
    assert "PORT: must be an integer; got 'eighty'" in text
    assert "MAX_BODY_BYTES: must be an integer at least 1024; got 12" in text
    assert "CACHE_ENABLED: must be true or false" in text
    assert "LOG_LEVEL: must be one of 'debug', 'info', 'warning', 'error'" in text


def test_settings_are_frozen_and_never_show_a_secret() -> None:
    settings = Settings(hf_token="hf_secret_value", api_keys="key_one,key_two")
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]
    assert "hf_secret_value" not in repr(settings) and "key_one" not in repr(settings)
    assert settings.secrets == ("hf_secret_value", "key_one", "key_two")
    assert "hf_secret_value" not in error_text(hf_token="hf_secret_value", port=0)
