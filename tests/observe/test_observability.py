"""What operators see: Prometheus metrics, the access log, and Server-Timing."""

from __future__ import annotations

import json
import logging

import pytest

from proxy.observe.logs import JSONFormatter
from tests.conftest import gateway_client
from tests.support.fault_space import FaultSpace

BODY = {"inputs": "How can I sleep better?"}


def sample(metrics: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, rest = key.partition("{")
        found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if metric == name and found == wanted:
            return float(value)
    return 0.0


async def test_metrics_count_requests_latency_cache_and_limits() -> None:
    async with gateway_client(rate_limit="3/minute") as client:
        for _ in range(4):
            await client.post("/api/chat", json=BODY)
        await client.post("/api/chat", content=b"{not json", headers={"Content-Type": "x/y"})
        await client.post("/api/chat", json={**BODY, "stream": True})
        text = (await client.get("/metrics")).text
    post = {"route": "/api/chat", "method": "POST"}
    assert sample(text, "proxy_requests_total", **post, status="200") == 3
    assert sample(text, "proxy_requests_total", **post, status="429") == 3
    assert sample(text, "proxy_rate_limited_total") == 3
    assert sample(text, "proxy_cache_requests_total", result="hit") == 2
    assert sample(text, "proxy_request_duration_seconds_count", route="/api/chat") == 6
    assert sample(text, "proxy_upstream_duration_seconds_count") == 1
    assert sample(text, "proxy_gateway_overhead_seconds_count") == 1
    assert sample(text, "proxy_in_flight_requests") == 1  # this /metrics request


async def test_metrics_count_upstream_errors_and_time_to_first_token(
    fault_space: FaultSpace,
) -> None:
    async with gateway_client(upstream_url=f"{fault_space.url}/apperror") as client:
        await client.post("/api/chat", json=BODY)
        text = (await client.get("/metrics")).text
    assert sample(text, "proxy_upstream_errors_total", code="upstream_error") == 1
    # Any scenario name the fault Space does not know answers like /ok.
    async with gateway_client(upstream_url=f"{fault_space.url}/observed") as client:
        await client.post("/api/chat", json={**BODY, "stream": True})
        text = (await client.get("/metrics")).text
    assert sample(text, "proxy_time_to_first_token_seconds_count") == 1


async def test_unknown_paths_share_one_label() -> None:
    async with gateway_client() as client:
        for path in ("/a", "/b/c", "/wp-admin"):
            await client.get(path)
        text = (await client.get("/metrics")).text
    assert sample(text, "proxy_requests_total", route="other", method="GET", status="404") == 3
    assert "wp-admin" not in text


async def test_made_up_methods_share_one_label() -> None:
    async with gateway_client() as client:
        for method in ("FOO", "BAR", "PROPFIND"):
            assert (await client.request(method, "/healthz")).status_code == 405
        text = (await client.get("/metrics")).text
    assert sample(text, "proxy_requests_total", route="/healthz", method="other", status="405") == 3
    assert "PROPFIND" not in text


async def test_metrics_token() -> None:
    async with gateway_client(metrics_token="scrape-secret") as client:
        missing = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        good = await client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert (missing.status_code, missing.json()["code"]) == (401, "missing_metrics_token")
    assert wrong.status_code == 401
    assert good.status_code == 200 and "proxy_requests_total" in good.text


async def test_server_timing_names_the_gateway_and_the_upstream() -> None:
    async with gateway_client(mock_latency_ms=50) as client:
        miss = await client.post("/api/chat", json=BODY)
        hit = await client.post("/api/chat", json=BODY)
    timing = dict(part.strip().split(";dur=") for part in miss.headers["server-timing"].split(","))
    assert set(timing) == {"gateway", "upstream"}
    assert float(timing["upstream"]) >= 50
    assert float(timing["gateway"]) < float(timing["upstream"])
    assert hit.headers["server-timing"].startswith("gateway;dur=")
    assert "upstream" not in hit.headers["server-timing"]


async def test_access_log_fields_and_no_prompt(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    async with gateway_client() as client:
        await client.post("/api/chat", json={"inputs": "my secret symptom"})
    records = [r for r in caplog.records if r.name == "proxy.access"]
    assert len(records) == 1
    line = json.loads(JSONFormatter().format(records[0]))
    assert line["route"] == "/api/chat" and line["status"] == 200
    assert line["cache"] == "MISS" and line["upstream"] == "mock"
    assert "secret" not in caplog.text


async def test_access_log_can_be_turned_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.access")
    async with gateway_client(access_log=False) as client:
        await client.get("/healthz")
    assert not [r for r in caplog.records if r.name == "proxy.access"]


def test_log_times_formatted_once_a_second_read_as_logging_writes_them() -> None:
    """The cached date and time of our formatters is the text logging's own would write,
    across second boundaries, with and without a date format."""
    from proxy.observe.logs import TEXT_FORMAT, Formatter

    ours, stock = Formatter(TEXT_FORMAT), logging.Formatter(TEXT_FORMAT)
    ours_json, stock_json = JSONFormatter(), logging.Formatter()
    for created in (1_700_000_000.001, 1_700_000_000.999, 1_700_000_001.0, 1_700_000_001.5,
                    1_700_000_000.25, 1_800_000_000.123):  # fmt: skip
        record = logging.LogRecord("proxy.access", logging.INFO, __file__, 1, "x", None, None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == stock.format(record)
        iso = "%Y-%m-%dT%H:%M:%S"
        assert ours_json.formatTime(record, iso) == stock_json.formatTime(record, iso)
        assert json.loads(ours_json.format(record))["time"] == stock_json.formatTime(record, iso)
