"""The Space app under test: tiny random Llamas built offline, and ``python app.py`` run for real.

These tests load torch and transformers and carry the ``space`` marker: ``pytest -m "not space"``
is the fast suite; the README's test command runs everything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.processes import ROOT
from tests.support.servers import free_port, wait_until
from tests.support.tiny_llama import make_tiny_llama

SPACE_DIR = ROOT / "space"
if str(SPACE_DIR) not in sys.path:
    sys.path.insert(0, str(SPACE_DIR))  # the Space's modules import each other as top-level

# What the fixture Space runs with; tests that count on a limit read it from here.
SPACE_ENV = {
    "MAX_INPUT_CHARS": "2000",
    "MAX_NEW_TOKENS_LIMIT": "1024",
    "CONCURRENCY_LIMIT": "1",
    "QUEUE_MAX_SIZE": "2",
    "SYSTEM_PROMPT": "You are a careful health assistant.",
}


@dataclass(frozen=True)
class TinyModels:
    first: Path
    second: Path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    root = tmp_path_factory.mktemp("tiny-llama")
    return TinyModels(
        make_tiny_llama(root / "seed0", seed=0), make_tiny_llama(root / "seed1", seed=1)
    )


@dataclass
class SpaceProcess:
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/config", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def space(
    tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SpaceProcess]:
    """``python app.py`` in space/, as a Space starts it, serving the first tiny model."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("space") / "space.log"
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("GRADIO_", "MODEL_"))
    }
    env.update(
        SPACE_ENV,
        MODEL_ID_OVERRIDE=str(tiny_models.first),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        PYTHONUNBUFFERED="1",
    )
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=SPACE_DIR,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(
                lambda: process.poll() is not None or _up(url),
                timeout=120,
                what="the Space app",
            )
            if process.poll() is not None:
                raise RuntimeError(f"the Space app exited:\n{log_path.read_text()}")
            yield SpaceProcess(url, log_path)
        finally:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
