"""``python -m proxy`` as a user runs it: test mode from nothing, the Procfile line, bad
configuration, and ``inspect``. Every output is kept for the secret audit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import GradioServer, audited_client
from tests.support.audit import AUDIT, CLIENT_AUTH, TOKEN
from tests.support.processes import clean_env, running
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_test_mode_from_nothing_announces_itself() -> None:
    port = free_port()
    with running(
        [sys.executable, "-m", "proxy", "--port", str(port)], clean_env(), port
    ) as gateway:
        with audited_client(gateway.url) as client:
            response = client.post(
                "/api/chat", json={"inputs": "How can I lower my blood pressure?"}
            )
    assert response.status_code == 200
    assert response.headers["x-upstream"] == "mock"
    assert "blood pressure" in response.json()["generated_text"].lower()
    assert "TEST MODE" in gateway.output


def test_procfile_command_serves() -> None:
    line = (ROOT / "Procfile").read_text().strip()
    assert line.startswith("web: ")
    port = free_port()
    with running(line.removeprefix("web: "), clean_env(PORT=str(port)), port) as gateway:
        with audited_client(gateway.url) as client:
            assert client.get("/readyz").status_code == 200


def test_real_upstream_with_debug_logging_never_logs_the_token(
    gradio_server: GradioServer,
) -> None:
    port = free_port()
    env = clean_env(
        UPSTREAM_URL=f"{gradio_server.url}/full", HF_TOKEN=TOKEN, LOG_LEVEL="debug", PORT=str(port)
    )
    with running([sys.executable, "-m", "proxy"], env, port) as gateway:
        with audited_client(gateway.url) as client:
            ok = client.post(
                "/api/chat", json={"inputs": "hello"}, headers={"Authorization": CLIENT_AUTH}
            )
            failed = client.post("/api/chat", json={"inputs": "RAISE"})
    assert ok.status_code == 200
    assert failed.status_code == 502
    output = gateway.output
    assert "upstream endpoint /predict" in output
    assert TOKEN not in output
    assert CLIENT_AUTH not in output


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"PORT": "eighty"}, ["PORT"]),
        ({"UPSTREAM_URL": "ftp://example"}, ["UPSTREAM_URL", "owner/name"]),
        ({"ALLOWED_ORIGINS": "*", "CORS_ALLOW_CREDENTIALS": "1"}, ["CORS_ALLOW_CREDENTIALS"]),
    ],
)
def test_bad_configuration_stops_start_up_naming_the_variable(
    env: dict[str, str], words: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy"],
        env=clean_env(**env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    for word in words:
        assert word in result.stderr
    assert "Traceback" not in result.stderr


def test_inspect_prints_endpoints_and_mapping(gradio_server: GradioServer) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "inspect", f"{gradio_server.url}/seed"],
        env=clean_env(HF_TOKEN=TOKEN),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    AUDIT.add(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr
    assert "endpoint /lambda(prompt, model, max_tokens, temp)" in result.stdout
    assert "POST /gradio_api/call/lambda" in result.stdout
    assert "max_tokens [Max New Tokens] <- max_new_tokens (clamped to 10..1024)" in result.stdout


def test_inspect_unreachable_says_so() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "inspect", f"http://127.0.0.1:{free_port()}"],
        env=clean_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "proxy inspect:" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_upstreams_file_stops_start_up_naming_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "upstreams.toml"
    path.write_text(
        '[[upstreams]]\nname = "space-a"\nkind = "gradio"\nurl = "owner/a"\n\n'
        '[[upstreams]]\nname = "tgi-b"\nkind = "tgi"\nurl = "http://127.0.0.1:9"\npriorty = 1\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "proxy"],
        env=clean_env(UPSTREAMS_FILE=str(path)),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "entry 2 ('tgi-b'), priorty: is not a setting of an upstream" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_shows_each_upstream_and_the_order_per_model(
    tmp_path: Path, gradio_server: GradioServer
) -> None:
    path = tmp_path / "upstreams.toml"
    path.write_text(
        f'[[upstreams]]\nname = "space-a"\nkind = "gradio"\nurl = "{gradio_server.url}/a"\n'
        'token_env = "SPACE_A_TOKEN"\nweight = 3\n\n'
        f'[[upstreams]]\nname = "tgi-b"\nkind = "tgi"\nurl = "http://127.0.0.1:{free_port()}"\n'
        'models = ["llama-2-13b-chat"]\npriority = 1\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "check"],
        env=clean_env(UPSTREAMS_FILE=str(path), SPACE_A_TOKEN=TOKEN),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    AUDIT.add(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr  # every model has an upstream ready
    out = result.stdout
    assert f"space-a (gradio {gradio_server.url}/a): ready: gradio endpoint /predict" in out
    assert "tgi-b (tgi http://127.0.0.1:" in out and "NOT READY: cannot connect" in out
    assert "llama-2-7b-chat: space-a (priority 0, weight 3)\n" in out
    assert (
        "llama-2-13b-chat: space-a (priority 0, weight 3), tgi-b (priority 1, weight 1, not ready)"
    ) in out
    assert TOKEN not in out
