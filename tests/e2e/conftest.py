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
from tests.support.servers import ThreadServer, free_port, wait_until

APPS = Path(__file__).with_name("gradio_apps.py")


class GradioServer:
    def __init__(self, url: str, headers_log: Path) -> None:
        self.url = url
        self.headers_log = headers_log

    def received(self) -> list[dict[str, Any]]:
        if not self.headers_log.exists():
            return []
        lines = self.headers_log.read_text().splitlines()
        return [json.loads(line) for line in lines if line]


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="session")
def gradio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GradioServer]:
    """The real gradio apps of gradio_apps.py on a free port, for the whole session."""
    port = free_port()
    headers_log = tmp_path_factory.mktemp("gradio") / "headers.jsonl"
    env = {
        **os.environ,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
    }
    output_path = headers_log.with_name("output.log")
    output = output_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, str(APPS), str(port), str(headers_log)],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: (
                process.poll() is not None
                or (_up(f"{url}/seed/config") and _up(f"{url}/full/config"))
            ),
            timeout=120,
            what="the gradio test apps",
        )
        if process.poll() is not None:
            raise RuntimeError(f"gradio test apps exited:\n{output_path.read_text()}")
        yield GradioServer(url, headers_log)
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        output.close()


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
