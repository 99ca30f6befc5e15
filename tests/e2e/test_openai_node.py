"""The official ``openai`` SDK for Node against the gateway on a real socket: the models, a
completion, a stream with usage, and a refusal, as a Node front end's server calls them.

The test installs the SDK itself from ``tests/node/package-lock.json`` (``npm ci``); Node is a
test dependency only (scripts/system-deps.sh installs it), never part of the product."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy import Settings, create_app
from tests.support.servers import ThreadServer

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture(scope="module")
def node_sdk() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are missing: run scripts/system-deps.sh (apt-get install "
                    "nodejs npm)")  # fmt: skip
    if not (NODE_DIR / "node_modules" / "openai").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"], cwd=NODE_DIR,
                       check=True, timeout=300)  # fmt: skip
    return Path(node)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with ThreadServer(create_app(Settings(mock_token_delay_ms=1, rate_limit="off"))) as server:
        yield f"{server.url}/v1"


def test_the_node_sdk_works_against_the_gateway(node_sdk: Path, base_url: str) -> None:
    run = subprocess.run([str(node_sdk), "client.mjs", base_url], cwd=NODE_DIR,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["models"] == ["llama-2-7b-chat", "llama-2-13b-chat", "llama-2-7b", "llama-2-13b"]
    assert out["retrieved"] == "llama-2-7b-chat"
    assert out["unknown"] == {"status": 404, "code": "model_not_found"}
    assert "fluid" in out["completion"].lower()  # the hydration topic
    assert out["streamed"] == out["completion"]
    assert out["usage"]["completion_tokens"] > 0
    assert out["streamUsage"]["total_tokens"] == out["usage"]["total_tokens"]
    assert out["refused"] == {"status": 400, "code": "unsupported_response_format",
                              "param": "response_format"}  # fmt: skip
