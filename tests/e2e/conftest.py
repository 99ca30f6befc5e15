from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy import Settings, create_app
from tests.support.audit import AUDIT, TOKEN
from tests.support.redis_server import RedisServer
from tests.support.servers import ThreadServer, free_port, wait_until

APPS = Path(__file__).with_name("gradio_apps.py")
SHAPES = Path(__file__).with_name("space_shapes.py")
SHAPE_PATHS = ("/official", "/bare", "/pipeline", "/blocks", "/private", "/zerogpu")


class GradioServer:
    def __init__(self, url: str, headers_log: Path) -> None:
        self.url = url
        self.headers_log = headers_log

    def received(self) -> list[dict[str, Any]]:
        if not self.headers_log.exists():
            return []
        lines = self.headers_log.read_text().splitlines()
        return [json.loads(line) for line in lines if line]

    def stopped(self) -> list[dict[str, Any]]:
        """The streams the apps were stopped in before their end (app and prompt tail)."""
        log = self.headers_log.with_name(self.headers_log.name + ".stopped")
        lines = log.read_text().splitlines() if log.exists() else []
        return [json.loads(line) for line in lines if line]


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def serve_gradio_script(
    script: Path, log: Path, paths: tuple[str, ...], what: str
) -> Iterator[GradioServer]:
    """``python script PORT LOG`` on a free port until each app under ``paths`` answers
    its /config; stopped at the end."""
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
    }
    output_path = log.with_name("output.log")
    output = output_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, str(script), str(port), str(log)],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: process.poll() is not None or all(_up(f"{url}{path}/config") for path in paths),
            timeout=120,
            what=what,
        )
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited:\n{output_path.read_text()}")
        yield GradioServer(url, log)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        output.close()


@pytest.fixture(scope="session")
def gradio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GradioServer]:
    """The real gradio apps of gradio_apps.py on a free port, for the whole session."""
    log = tmp_path_factory.mktemp("gradio") / "headers.jsonl"
    with serve_gradio_script(APPS, log, ("/seed", "/full"), "the gradio test apps") as server:
        yield server


@pytest.fixture(scope="session")
def space_shapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GradioServer]:
    """The apps of space_shapes.py (real Llama 2 chat Spaces' shapes) for the session."""
    log = tmp_path_factory.mktemp("shapes") / "received.jsonl"
    with serve_gradio_script(SHAPES, log, SHAPE_PATHS, "the Space-shape apps") as server:
        yield server


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free port, stopped at the end."""
    server = RedisServer().start()
    yield server
    server.stop()


@contextmanager
def gateway_server(**values: Any) -> Iterator[str]:
    """The gateway on a real uvicorn socket with these settings (HF token included)."""
    settings = Settings(**{"hf_token": TOKEN, **values})
    with ThreadServer(create_app(settings)) as server:
        yield server.url


def audited_client(base_url: str) -> httpx.Client:
    return httpx.Client(
        base_url=base_url,
        timeout=30,
        event_hooks={"response": [lambda r: (r.read(), AUDIT.record_response(r))]},
    )
