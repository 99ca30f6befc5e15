"""A deploy rehearsal, as a Procfile platform does it: the repository's files in a fresh
directory, a virtual environment built only from the lock (requirements.txt), and the real
``Procfile``'s ``web:`` line run by a real Procfile runner (honcho) with ``PORT`` and
``WEB_CONCURRENCY=2`` set, as Heroku sets them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import GradioServer
from tests.support.audit import TOKEN
from tests.support.processes import ROOT, Gateway, clean_env, running
from tests.support.redis_server import RedisServer
from tests.support.servers import free_port, wait_until

pytestmark = pytest.mark.e2e

HONCHO = str(Path(sys.executable).with_name("honcho"))
TEST_ONLY = {"pytest", "gradio", "torch", "transformers", "playwright", "uv", "honcho", "openai"}


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's files (what `git push` sends) with a venv built from the lock."""
    root = tmp_path_factory.mktemp("app")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for name in listed:
        source = ROOT / name
        if source.is_file():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    subprocess.run([sys.executable, "-m", "venv", str(root / ".venv")], check=True)
    subprocess.run(
        [str(root / ".venv/bin/python"), "-m", "pip", "install", "--quiet",
         "--disable-pip-version-check", "-r", "requirements.txt"],
        cwd=root, check=True, env=clean_env(),
    )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def procfile_env(app_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """The platform's environment: its PORT and WEB_CONCURRENCY, the app's venv first on
    PATH, so the Procfile's ``python`` is the deployed one."""
    env = clean_env(PORT=str(port), WEB_CONCURRENCY="2", LOG_FORMAT="json", **settings)
    env["PATH"] = f"{app_dir / '.venv/bin'}{os.pathsep}{env['PATH']}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def web(app_dir: Path, **settings: str) -> Any:
    port = free_port()
    return running([HONCHO, "start", "web"], procfile_env(app_dir, port, **settings), port,
                   cwd=app_dir)  # fmt: skip


def log_entries(gateway: Gateway) -> list[dict[str, Any]]:
    """The JSON log lines of the web process (honcho prefixes each with time and name)."""
    entries = []
    for line in gateway.read_output().splitlines():
        _, bar, rest = line.partition("| ")
        if bar and rest.startswith("{"):
            try:
                entries.append(json.loads(rest))
            except json.JSONDecodeError:
                continue  # a worker killed mid-line: its half line ran into the next one

    return entries


def pids_serving(gateway: Gateway, route: str) -> dict[str, int]:
    """request id -> the pid of the worker that served it."""
    return {
        e["request_id"]: e["pid"]
        for e in log_entries(gateway)
        if e["logger"] == "proxy.access" and e["route"] == route
    }


def pids_of(gateway: Gateway, responses: list[httpx.Response]) -> list[int]:
    """The pid of the worker that served each response, once its access-log line (which
    honcho relays a moment after the response) has arrived."""
    ids = [r.headers["x-request-id"] for r in responses]

    def logged() -> dict[str, int] | None:
        served = pids_serving(gateway, "/api/chat")
        return served if all(i in served for i in ids) else None

    served = wait_until(logged, timeout=10, what="the access-log lines")
    return [served[i] for i in ids]


def fresh(url: str, method: str = "GET", **kw: Any) -> httpx.Response:
    """One request on a new connection, so the kernel may hand it to any worker."""
    with httpx.Client(timeout=30) as client:
        return client.request(method, url, **kw)


def burst(url: str, method: str = "GET", *, count: int = 8, **kw: Any) -> list[httpx.Response]:
    """``count`` requests at once, each on its own connection: while one worker is busy
    accepting, the other takes connections too (one at a time, one worker may take all)."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: fresh(url, method, **kw), range(count)))


def both_workers_serve(gateway: Gateway) -> set[int]:
    def two() -> set[int] | None:
        burst(f"{gateway.url}/healthz")
        pids = set(pids_serving(gateway, "/healthz").values())
        return pids if len(pids) == 2 else None

    return wait_until(two, timeout=30, what="both workers to answer")  # type: ignore[no-any-return]


def test_the_build_installs_the_runtime_lock_only(app_dir: Path) -> None:
    listed = subprocess.run(
        [str(app_dir / ".venv/bin/python"), "-m", "pip", "list", "--format=json"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    installed = {p["name"].lower() for p in json.loads(listed)}
    assert {"uvicorn", "starlette", "aiohttp", "redis"} <= installed
    assert not installed & TEST_ONLY
    python = (app_dir / ".python-version").read_text().strip()
    assert python == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_without_redis_one_worker_keeps_limits_exact_and_says_why(app_dir: Path) -> None:
    with web(app_dir, RATE_LIMIT="3/minute", MOCK_TOKEN_DELAY_MS="0") as gateway:
        answers = [
            fresh(f"{gateway.url}/api/chat", "POST", json={"inputs": f"question {i}"})
            for i in range(4)
        ]
        for _ in range(10):
            fresh(f"{gateway.url}/healthz")
        pids = set(pids_serving(gateway, "/healthz").values())
        output = gateway.read_output()
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert answers[0].headers["x-upstream"] == "mock"
    assert "serving with 1 worker, not WEB_CONCURRENCY=2" in output
    assert "set REDIS_URL" in output
    assert len(pids) == 1


def test_two_workers_share_one_budget_one_cache_and_their_metrics(
    app_dir: Path, redis_server: RedisServer
) -> None:
    redis_server.client().flushall()
    # Clients told apart by X-Forwarded-For (the platform's router is trusted), or by their
    # API keys: a shared cache shows X-Cache to callers with a credential only.
    settings = {
        "REDIS_URL": redis_server.url, "RATE_LIMIT": "6/minute", "TRUSTED_PROXIES": "*",
        "CACHE_SCOPE": "shared", "CALLERS": "anyone,key", "API_KEYS": ",".join(KEYS),
    }  # fmt: skip
    body = {"inputs": "How can I sleep better?"}
    with web(app_dir, **settings) as gateway:
        both_workers_serve(gateway)
        url = f"{gateway.url}/api/chat"
        # One client, until both workers have answered it: six requests in a minute in all.
        budget: list[httpx.Response] = []
        for _ in range(8):
            budget += burst(url, "POST", count=4, json={"inputs": "a budget question"},
                            headers={"X-Forwarded-For": "198.51.100.1"})  # fmt: skip
            if len(set(pids_of(gateway, budget))) == 2 and len(budget) >= 12:
                break
        # Many clients asking one question: a hit answered by the worker that did not miss.
        first = fresh(url, "POST", json=body, headers={"Authorization": f"Bearer {KEYS[-1]}"})
        [miss_pid] = pids_of(gateway, [first])
        hits: list[httpx.Response] = []
        for round_ in range(10):
            hits += burst_hits(url, body, round_)
            if set(pids_of(gateway, hits)) - {miss_pid}:
                break
        scrapes = [fresh(f"{gateway.url}/metrics").text for _ in range(4)]
        budget_pids, hit_pids = pids_of(gateway, budget), pids_of(gateway, hits)
    assert len(set(budget_pids)) == 2
    assert [r.status_code for r in budget].count(200) == 6  # one budget for both workers
    assert {r.status_code for r in budget} == {200, 429}
    assert first.headers["x-cache"] == "MISS"
    assert {r.headers["x-cache"] for r in hits} == {"HIT"}
    assert set(hit_pids) - {miss_pid}
    total = len(budget) + 1 + len(hits)
    ok = 6 + 1 + len(hits)
    for text in scrapes:  # whichever worker answered the scrape: the sum over both
        assert (
            f'proxy_requests_total{{method="POST",route="/api/chat",status="200"}} {ok}.0' in text
        )
        assert (
            f'proxy_requests_total{{method="POST",route="/api/chat",status="429"}} {total - ok}.0'
            in text
        )


KEYS = [f"client-key-{i:04d}" for i in range(41)]


def burst_hits(url: str, body: dict[str, str], round_: int) -> list[httpx.Response]:
    """Four clients at once (their own keys), each asking ``body``."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(
            lambda i: fresh(url, "POST", json=body,
                            headers={"Authorization": f"Bearer {KEYS[4 * round_ + i]}"}),
            range(4),
        ))  # fmt: skip


def test_a_generation_through_a_real_gradio_app(
    app_dir: Path, redis_server: RedisServer, gradio_server: GradioServer
) -> None:
    settings = {
        "REDIS_URL": redis_server.url,
        "UPSTREAM_URL": f"{gradio_server.url}/full",
        "HF_TOKEN": TOKEN,
    }
    with web(app_dir, **settings) as gateway:
        both_workers_serve(gateway)
        response = fresh(f"{gateway.url}/api/chat", "POST", json={"inputs": "deployed hello"})
    assert response.status_code == 200, response.text
    assert response.headers["x-upstream"] == "gradio"
    assert "deployed hello [/INST]" in response.json()["generated_text"]


def test_sigterm_lets_every_workers_requests_finish(
    app_dir: Path, redis_server: RedisServer
) -> None:
    settings = {"REDIS_URL": redis_server.url, "MOCK_LATENCY_MS": "1500",
                "GRACEFUL_TIMEOUT": "10", "CACHE_ENABLED": "0"}  # fmt: skip
    with web(app_dir, **settings) as gateway:
        both_workers_serve(gateway)
        results: list[httpx.Response] = []

        def slow(i: int) -> None:
            results.append(fresh(f"{gateway.url}/api/chat", "POST", json={"inputs": f"q{i}"}))

        # Enough at once that both workers accept some (4 often all landed on one).
        threads = [threading.Thread(target=slow, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()

        def in_flight() -> bool:
            text = fresh(f"{gateway.url}/metrics").text
            line = next(x for x in text.splitlines() if x.startswith("proxy_in_flight"))
            return float(line.split()[-1]) >= 17  # the slow requests and the scrape

        wait_until(in_flight, timeout=10, what="the requests to be in flight")
        os.killpg(gateway.process.pid, signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        gateway.process.wait(20)
        served_by = set(pids_serving(gateway, "/api/chat").values())
        output = gateway.read_output()
    assert [r.status_code for r in results] == [200] * 16
    assert len(served_by) == 2  # both workers had requests in flight, and drained them
    assert "web.1 stopped (rc=0)" in output  # the gateway itself exited 0


def test_a_worker_that_dies_is_replaced(app_dir: Path, redis_server: RedisServer) -> None:
    with web(app_dir, REDIS_URL=redis_server.url) as gateway:
        first = both_workers_serve(gateway)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> set[int] | None:
            burst(f"{gateway.url}/healthz")
            pids = set(pids_serving(gateway, "/healthz").values()) - first
            return pids or None

        new = wait_until(replaced, timeout=30, what="a new worker to serve")
        after = fresh(f"{gateway.url}/api/chat", "POST", json={"inputs": "still here?"})
    assert new and victim not in new
    assert after.status_code == 200
