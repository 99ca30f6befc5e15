from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from proxy import Settings, create_app
from tests.support.audit import AUDIT, AuditLogHandler
from tests.support.fault_space import FaultSpace

# Offline and quiet, before anything imports huggingface_hub, gradio or transformers: no test
# may reach the Hub, phone home or draw progress bars.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
}
os.environ.update(OFFLINE_ENV)


def pytest_configure(config: pytest.Config) -> None:
    root = logging.getLogger()
    root.addHandler(AuditLogHandler())
    logging.getLogger("proxy").setLevel(logging.DEBUG)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The secret audit: no response or log line that this run recorded, whatever tests it
    selected, holds the HF token, a browser's Authorization value or an API key."""
    leaks = AUDIT.leaks()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write("\n")
        used = "yes" if AUDIT.token_seen_upstream else "not in this selection"
        reporter.write_line(
            f"secret audit: {len(AUDIT.texts)} responses and log lines, {len(leaks)} leaks; "
            f"token seen upstream: {used}"
        )
        for leak in leaks:
            reporter.write_line(f"  LEAK: {leak!r}", red=True)
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's own configuration."""
    for name in Settings.fields():
        monkeypatch.delenv(name.upper(), raising=False)


def make_settings(**values: Any) -> Settings:
    return Settings(**values)


@asynccontextmanager
async def gateway_client(**values: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with these settings, in process, lifespan running; responses are audited."""
    app = create_app(make_settings(**{"mock_token_delay_ms": 0, **values}))

    async def record(response: httpx.Response) -> None:
        await response.aread()
        AUDIT.record_response(response)

    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://gateway", event_hooks={"response": [record]}
        ) as client:
            yield client


@pytest.fixture
async def mock_client() -> AsyncIterator[httpx.AsyncClient]:
    async with gateway_client() as client:
        yield client


@pytest.fixture(scope="session")
def fault_space() -> Iterator[FaultSpace]:
    with FaultSpace() as space:
        yield space
