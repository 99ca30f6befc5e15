"""A Space's error event as the gateway's error, ZeroGPU's wordings included."""

from __future__ import annotations

import pytest

from proxy.errors import UpstreamAppError, UpstreamBusy, UpstreamQuotaExceeded
from proxy.upstreams.gradio_errors import app_error, named_wait


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("Try again in 0:05:22. Subscribe", 322),
        ("retry in 0:09:48", 588),
        ("Try again in 1 day, 2:03:04.", 93784),
        ("Try again in 0:00:07.250000", 7),
        ("no wait here", None),
    ],
)
def test_the_named_wait_is_read_as_timedelta_writes_it(text: str, seconds: int | None) -> None:
    assert named_wait(text) == seconds


def test_the_title_counts_as_much_as_the_message() -> None:
    error = app_error({"error": "Space app has reached its GPU limit.", "title": None}, str)
    assert isinstance(error, UpstreamQuotaExceeded)
    titled = app_error({"error": "Please wait.", "title": "ZeroGPU quota exceeded"}, str)
    assert isinstance(titled, UpstreamQuotaExceeded) and titled.retry_after == 60
    assert titled.upstream_wait == 60  # never waited out by the gateway's own retry


def test_no_gpu_is_busy_even_under_a_quota_title() -> None:
    error = app_error(
        {"error": "No GPU was available after 60s.", "title": "ZeroGPU quota exceeded"}, str
    )
    assert isinstance(error, UpstreamBusy) and error.retry_after == 30


def test_an_error_without_words_and_secrets_in_one() -> None:
    assert "show_error=True" in app_error({"error": None}, str).message
    error = app_error({"error": "bad token hf_secret"}, lambda t: t.replace("hf_secret", "***"))
    assert isinstance(error, UpstreamAppError) and "hf_secret" not in error.message
