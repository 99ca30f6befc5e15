"""The secret audit itself (tests/support/audit.py): it must see a secret wherever it is."""

from __future__ import annotations

import pytest

from tests.support.audit import API_KEY, CLIENT_AUTH, TOKEN, Audit


@pytest.mark.parametrize("secret", [TOKEN, CLIENT_AUTH, API_KEY])
def test_a_recorded_secret_is_a_leak(secret: str) -> None:
    audit = Audit()
    audit.add("200\ncontent-type: application/json\n{}")
    audit.add(f"proxy.upstream WARNING the Space said: got header Bearer {secret} back")
    assert audit.leaks() == [
        f"proxy.upstream WARNING the Space said: got header Bearer {secret} back"
    ]


def test_clean_texts_are_no_leak() -> None:
    audit = Audit()
    audit.add('502\n{"error": "the upstream refused the token (check HF_TOKEN)"}')
    assert audit.leaks() == []
