"""The gateway's error family. Each error has an HTTP status, a stable ``code`` and a message
that is safe to show to a browser (it never contains a token, a header or a stack trace).

GatewayError
├── ClientError (4xx: the caller can fix it)
│   ├── InvalidRequest            400 invalid_json, invalid_request, ...
│   ├── UnknownModel              400 unknown_model
│   ├── Unauthorized              401 missing_api_key, missing_token, missing_credential,
│   │                                 invalid_api_key, invalid_token, token_expired
│   ├── Forbidden                 403 origin_not_allowed
│   ├── NotFound                  404 not_found
│   ├── MethodNotAllowed          405 method_not_allowed (with Allow)
│   ├── PayloadTooLarge           413 payload_too_large
│   ├── UnsupportedMediaType      415 unsupported_media_type
│   ├── InvalidParameter          422 invalid_parameter, empty_prompt, prompt_too_long
│   └── RateLimited               429 rate_limited (with Retry-After and RateLimit-*),
│                                     too_many_failed_auth (with Retry-After)
├── GatewayBusy                   503 gateway_busy (with Retry-After): MAX_CONCURRENCY reached
├── CacheBackendDown              503 cache_unavailable (with Retry-After): DELETE /api/cache
├── AuthUnavailable               503 auth_unavailable (with Retry-After): the JWKS is unreachable
└── UpstreamFailure (the model side failed; the request may succeed later)
    ├── UpstreamUnreachable       502 upstream_unreachable
    ├── UpstreamAppError          502 upstream_error
    ├── UpstreamBadResponse       502 upstream_bad_response
    │   └── UpstreamDisconnected  502 upstream_disconnected: cut before the answer
    ├── UpstreamAuth              502 upstream_auth
    ├── UpstreamServerError       502 upstream_server_error: a 500 before any output
    ├── UpstreamRejected          422 upstream_rejected (the model refused the input)
    │   └── UpstreamPromptTooLong 400 prompt_too_long: over the model's context length
    ├── UpstreamRateLimited       429 upstream_rate_limited (with Retry-After)
    │   └── UpstreamQuotaExceeded 429 upstream_quota (with Retry-After): ZeroGPU quota spent
    ├── UpstreamBusy              503 upstream_busy (with Retry-After): its queue is full
    ├── UpstreamStarting          503 upstream_starting (with Retry-After): asleep or building
    ├── UpstreamUnavailable       503 upstream_unavailable (with Retry-After): circuit open
    ├── UpstreamNotReady          503 upstream_not_ready (with Retry-After)
    └── UpstreamTimeout           504 upstream_timeout

What the gateway does with each error is said here, on the classes, and nowhere else:

- ``retry_before_output``: a failure before any output that another attempt may cure
  (connect errors, a connection cut before the answer, a busy or starting Space). Retried
  within UPSTREAM_RETRIES and the request's deadline.
- ``unavailable``: the upstream cannot serve now. It counts toward opening the circuit, makes
  ``/readyz`` unready, and lets FALLBACK=mock answer instead.
- ``request_fault``: the request itself is wrong. Returned as it is, never retried, and never
  held against the upstream (the circuit treats the answer as a sign of life).
- ``cold_start_symptom``: what a Space that is asleep or building looks like; the Hub's
  runtime stage is asked to explain it when SPACE_ID is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class GatewayError(Exception):
    """Base of every error the gateway answers with on purpose."""

    status: int = 500
    code: str = "internal_error"
    retry_before_output: ClassVar[bool] = False
    unavailable: ClassVar[bool] = False
    request_fault: ClassVar[bool] = False
    cold_start_symptom: ClassVar[bool] = False
    # True when this is a failure remembered from an earlier upstream call and raised again
    # without calling the upstream: the circuit breaker must not count it twice.
    replayed: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param  # the request field at fault, when there is one
        if code is not None:
            self.code = code
        self.retry_after = retry_after
        # The wait the upstream itself asked for (its Retry-After header), when it asked.
        self.upstream_wait: float | None = None
        self.headers = dict(headers or {})
        if retry_after is not None:
            self.headers["Retry-After"] = str(retry_after)


class ClientError(GatewayError):
    status = 400
    code = "invalid_request"
    request_fault = True


class InvalidRequest(ClientError):
    status = 400
    code = "invalid_request"


class UnknownModel(ClientError):
    status = 400
    code = "unknown_model"


class Unauthorized(ClientError):
    status = 401
    code = "missing_api_key"


class Forbidden(ClientError):
    status = 403
    code = "origin_not_allowed"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class MethodNotAllowed(ClientError):
    status = 405
    code = "method_not_allowed"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ClientError):
    status = 415
    code = "unsupported_media_type"


class InvalidParameter(ClientError):
    status = 422
    code = "invalid_parameter"


class RateLimited(ClientError):
    status = 429
    code = "rate_limited"


class GatewayBusy(GatewayError):
    status = 503
    code = "gateway_busy"


class CacheBackendDown(GatewayError):
    """The cache backend (Redis) did not answer an operator's request."""

    status = 503
    code = "cache_unavailable"


class AuthUnavailable(GatewayError):
    """User tokens cannot be checked now: the identity provider's keys could not be fetched."""

    status = 503
    code = "auth_unavailable"


class UpstreamFailure(GatewayError):
    status = 502
    code = "upstream_error"


class UpstreamUnreachable(UpstreamFailure):
    status = 502
    code = "upstream_unreachable"
    retry_before_output = True
    unavailable = True
    cold_start_symptom = True


class UpstreamAppError(UpstreamFailure):
    status = 502
    code = "upstream_error"


class UpstreamBadResponse(UpstreamFailure):
    status = 502
    code = "upstream_bad_response"
    unavailable = True


class UpstreamDisconnected(UpstreamBadResponse):
    """The connection was cut before the answer (a reset, a closed stream): worth a retry."""

    status = 502
    code = "upstream_disconnected"
    retry_before_output = True


class UpstreamAuth(UpstreamFailure):
    status = 502
    code = "upstream_auth"


class UpstreamServerError(UpstreamFailure):
    """An HTTP 500 before any output: often one bad moment of a server; another try may do."""

    status = 502
    code = "upstream_server_error"
    retry_before_output = True
    unavailable = True


class UpstreamRejected(UpstreamFailure):
    status = 422
    code = "upstream_rejected"
    request_fault = True


class UpstreamPromptTooLong(UpstreamRejected):
    """The model's context cannot hold the prompt and the tokens asked for."""

    status = 400
    code = "prompt_too_long"


class UpstreamRateLimited(UpstreamFailure):
    status = 429
    code = "upstream_rate_limited"
    # Retried only after the upstream's own Retry-After, when that is short enough
    # (UPSTREAM_RETRY_AFTER_MAX) and within the deadline, or with back-off when it gave none.
    retry_before_output = True


class UpstreamQuotaExceeded(UpstreamRateLimited):
    """A ZeroGPU Space's GPU quota is spent (the account's whose token the gateway holds):
    Retry-After is the wait the Space named."""

    code = "upstream_quota"


class UpstreamBusy(UpstreamFailure):
    status = 503
    code = "upstream_busy"
    retry_before_output = True
    unavailable = True
    cold_start_symptom = True


class UpstreamStarting(UpstreamFailure):
    status = 503
    code = "upstream_starting"
    retry_before_output = True
    unavailable = True
    cold_start_symptom = True


class UpstreamUnavailable(UpstreamFailure):
    status = 503
    code = "upstream_unavailable"
    unavailable = True


class UpstreamNotReady(UpstreamFailure):
    status = 503
    code = "upstream_not_ready"
    unavailable = True


class UpstreamTimeout(UpstreamFailure):
    status = 504
    code = "upstream_timeout"
    unavailable = True


# Values a caller or an operator sent are never echoed whole into an error message: at most
# this many characters of their repr.
ECHO_CHARS = 40


def echo(value: object) -> str:
    """``repr(value)``, cut to ECHO_CHARS."""
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 3] + "..."
