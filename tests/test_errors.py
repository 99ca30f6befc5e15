"""The error family's classification (proxy/errors.py): every GatewayError subclass, what the
gateway does with it. A new error class fails here until it is placed in this table."""

from __future__ import annotations

import proxy.errors as errors
from proxy.errors import GatewayError

# class: (status, code, retry_before_output, unavailable, request_fault, cold_start_symptom)
EXPECTED = {
    "GatewayError": (500, "internal_error", False, False, False, False),
    "ClientError": (400, "invalid_request", False, False, True, False),
    "InvalidRequest": (400, "invalid_request", False, False, True, False),
    "UnknownModel": (400, "unknown_model", False, False, True, False),
    "Unauthorized": (401, "missing_api_key", False, False, True, False),
    "Forbidden": (403, "origin_not_allowed", False, False, True, False),
    "NotFound": (404, "not_found", False, False, True, False),
    "MethodNotAllowed": (405, "method_not_allowed", False, False, True, False),
    "PayloadTooLarge": (413, "payload_too_large", False, False, True, False),
    "UnsupportedMediaType": (415, "unsupported_media_type", False, False, True, False),
    "InvalidParameter": (422, "invalid_parameter", False, False, True, False),
    "RateLimited": (429, "rate_limited", False, False, True, False),
    "GatewayBusy": (503, "gateway_busy", False, False, False, False),
    "CacheBackendDown": (503, "cache_unavailable", False, False, False, False),
    "AuthUnavailable": (503, "auth_unavailable", False, False, False, False),
    "UpstreamFailure": (502, "upstream_error", False, False, False, False),
    "UpstreamUnreachable": (502, "upstream_unreachable", True, True, False, True),
    "UpstreamAppError": (502, "upstream_error", False, False, False, False),
    "UpstreamBadResponse": (502, "upstream_bad_response", False, True, False, False),
    "UpstreamDisconnected": (502, "upstream_disconnected", True, True, False, False),
    "UpstreamAuth": (502, "upstream_auth", False, False, False, False),
    "UpstreamServerError": (502, "upstream_server_error", True, True, False, False),
    "UpstreamRejected": (422, "upstream_rejected", False, False, True, False),
    "UpstreamPromptTooLong": (400, "prompt_too_long", False, False, True, False),
    "UpstreamRateLimited": (429, "upstream_rate_limited", True, False, False, False),
    "UpstreamQuotaExceeded": (429, "upstream_quota", True, False, False, False),
    "UpstreamBusy": (503, "upstream_busy", True, True, False, True),
    "UpstreamStarting": (503, "upstream_starting", True, True, False, True),
    "UpstreamUnavailable": (503, "upstream_unavailable", False, True, False, False),
    "UpstreamNotReady": (503, "upstream_not_ready", False, True, False, False),
    "UpstreamTimeout": (504, "upstream_timeout", False, True, False, False),
}


def _family() -> dict[str, type[GatewayError]]:
    found: dict[str, type[GatewayError]] = {}
    todo: list[type[GatewayError]] = [GatewayError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_class_is_classified() -> None:
    family = _family()
    assert set(family) == set(EXPECTED)
    for name, cls in family.items():
        assert cls.__module__ == "proxy.errors", name
        flags = (cls.status, cls.code, cls.retry_before_output, cls.unavailable,
                 cls.request_fault, cls.cold_start_symptom)  # fmt: skip
        assert flags == EXPECTED[name], name


def test_no_error_is_both_the_requests_fault_and_the_upstreams() -> None:
    for name, cls in _family().items():
        assert not (cls.request_fault and (cls.unavailable or cls.retry_before_output)), name


def test_the_docstring_tree_names_every_class() -> None:
    assert errors.__doc__ is not None
    for name in EXPECTED:
        assert name in errors.__doc__, name
