"""Runs last: no response and no log line of the whole suite contains the HF token or a
browser's Authorization value or an API key (see tests/support/audit.py)."""

from __future__ import annotations

import pytest

from tests.support.audit import API_KEY, AUDIT, CLIENT_AUTH, TOKEN


def test_no_secret_in_any_response_or_log_line() -> None:
    if len(AUDIT.texts) < 50:
        pytest.skip("run with the whole suite: too little was recorded to audit")
    secrets = (TOKEN, CLIENT_AUTH, API_KEY)
    leaks = [text[:300] for text in AUDIT.texts if any(s in text for s in secrets)]
    assert not leaks, leaks
    # The audit is only meaningful if the token really was in use during the run.
    assert AUDIT.token_seen_upstream
