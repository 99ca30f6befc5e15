"""One redaction for every secret: the Redactor itself, and every log line of the process
through the handler that ``configure_logging`` installs."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from proxy.config.settings import Settings
from proxy.observe.logs import configure_logging
from proxy.observe.redaction import Redactor, encodings
from tests.support.audit import API_KEY, TOKEN

ADMIN = "admin-token-3b9f1c"
METRICS = "metrics-token-77ad20"
REDIS_PASSWORD = "redis-pass-e41b9a"


def settings() -> Settings:
    return Settings(
        hf_token=TOKEN,
        api_keys=f"other-key-0123456789,{API_KEY}",
        admin_token=ADMIN,
        metrics_token=METRICS,
        redis_url=f"rediss://default:{REDIS_PASSWORD}@cache.example:6380/0",
    )


def test_every_configured_secret_is_one_to_redact() -> None:
    assert set(settings().secrets) == {TOKEN, "other-key-0123456789", API_KEY, ADMIN,
                                       METRICS, REDIS_PASSWORD}  # fmt: skip
    assert Settings().secrets == ()


def test_secrets_and_any_bearer_credential_are_replaced() -> None:
    redact = Redactor(settings().secrets)
    text = (
        f"got headers: {{'authorization': 'Bearer {TOKEN}'}} key={API_KEY} admin {ADMIN} "
        f"url=rediss://default:{REDIS_PASSWORD}@cache metrics={METRICS} "
        "and a stranger's BEARER abc.def-123"
    )
    clean = redact(text)
    for secret in (*settings().secrets, "abc.def-123"):
        assert secret not in clean
    assert clean.count("[redacted]") == 6
    assert "got headers" in clean  # the rest of the text stays readable


def test_short_values_are_not_treated_as_secrets() -> None:
    assert Redactor(["abc", "", None]).secrets == ()
    assert Redactor(["abc"])("abc is fine") == "abc is fine"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_log_line_carries_a_secret(
    capsys: pytest.CaptureFixture[str], restored_logging: None, log_format: str
) -> None:
    configure_logging("info", log_format, settings().secrets)
    logger = logging.getLogger("proxy.test")
    logger.warning("the Space said: %s", f"bad token {TOKEN}")
    logger.info("admin called with Bearer %s", ADMIN)
    try:
        raise ConnectionError(f"cannot reach rediss://default:{REDIS_PASSWORD}@cache.example")
    except ConnectionError:
        logger.exception("cache down (key %s)", API_KEY)
    written = capsys.readouterr().err
    assert "the Space said" in written and "cache down" in written
    assert "Traceback" in written and "ConnectionError" in written
    for secret in settings().secrets:
        assert secret not in written


@pytest.mark.parametrize(
    "encode",
    [
        lambda s: s,
        lambda s: f"Authorization: Bearer {s}",
        lambda s: quote(f"token={s}&x=1", safe=""),
        lambda s: json.dumps({"headers": {"x-hf-authorization": s}}),
        lambda s: base64.b64encode(s.encode()).decode(),
        lambda s: base64.b64encode(f"a{s}".encode()).decode(),
        lambda s: base64.urlsafe_b64encode(f"ab{s}c".encode()).decode(),
    ],
    ids=["raw", "bearer", "percent", "json", "base64", "base64+1", "urlsafe+2"],
)
def test_a_secret_is_redacted_in_its_common_encodings(encode: Any) -> None:
    secret = 'hf_Se/cr+et"Token_0123456789'
    redact = Redactor([secret])
    text = encode(secret)
    assert redact.found_in(text)
    assert "[redacted]" in redact(text)
    for form in encodings(secret):
        assert form not in redact(text)
