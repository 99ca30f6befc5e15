"""What every HTTP upstream adapter shares: one pooled aiohttp session, and the mapping of
statuses and transport failures onto the gateway's errors (the retries before output are in
``retries.py``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import aiohttp
import orjson
from msgspec import Struct

from proxy.core.upstream import Readiness
from proxy.errors import (
    GatewayError,
    UpstreamAppError,
    UpstreamAuth,
    UpstreamBadResponse,
    UpstreamBusy,
    UpstreamDisconnected,
    UpstreamFailure,
    UpstreamPromptTooLong,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamStarting,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from proxy.observe.redaction import Redactor
from proxy.upstreams.body_reads import BodyReader, ReadExpired
from proxy.upstreams.retries import RETRY_AFTER_MAX

DEFAULT_RETRY_AFTER = {429: 30, 503: 10}
# The largest JSON answer read from an upstream (a generation, a Space's /config or /info).
MAX_ANSWER_BYTES = 16 << 20
T = TypeVar("T")


def error_message(body: bytes) -> str | None:
    """The explanation in an upstream's error body: TGI ``{"error": "..."}``, OpenAI
    ``{"error": {"message": ...}}``, vLLM ``{"message": ...}``, Gradio/FastAPI
    ``{"detail": ...}``, or None."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict):
        error = error.get("message")
    message = error if isinstance(error, str) else data.get("message") or data.get("detail")
    return str(message) if message else None


def new_session(
    *,
    headers: Mapping[str, str],
    max_connections: int,
    connect_timeout: float,
    read_timeout: float,
    inject: Callable[[Any], None] | None = None,
) -> aiohttp.ClientSession:
    """A pooled session; no total timeout (the adapters bound each call themselves). With
    ``inject`` (tracing on), every request carries the current span's ``traceparent``."""
    trace_configs = []
    if inject is not None:

        async def on_start(session: Any, context: Any, params: Any) -> None:
            inject(params.headers)

        config = aiohttp.TraceConfig()
        config.on_request_start.append(on_start)
        trace_configs.append(config)
    return aiohttp.ClientSession(
        trace_configs=trace_configs or None,
        connector=aiohttp.TCPConnector(limit=max_connections, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout),
        headers=dict(headers),
        read_bufsize=2**20,
        raise_for_status=False,
        # Upstream cookies are never kept: they would be shared by every browser user.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def waiting(
    error_class: type[UpstreamFailure], message: str, headers: Mapping[str, str], status: int
) -> UpstreamFailure:
    """An error that tells the client when to come back: the upstream's own Retry-After when
    it sent one (also noted as the wait it asked for, which a retry honours), else a default
    for ``status``."""
    value = headers.get("Retry-After", "")
    asked = int(value) if value.isdigit() else None
    error = error_class(
        message, retry_after=asked if asked is not None else DEFAULT_RETRY_AFTER.get(status, 10)
    )
    if asked is not None:
        error.upstream_wait = float(asked)
    return error


# How servers say that the prompt and the tokens asked for exceed the model's context: vLLM and
# OpenAI ("maximum context length"), TGI ("must have less than 4096 tokens", "inputs tokens +
# max_new_tokens must be <="), llama.cpp ("exceeds the available context size").
_CONTEXT_LENGTH = re.compile(
    r"(?i)context length|context size|context window|must have less than \d+ tokens|"
    r"max_new_tokens.{0,20}must be <=|too many tokens|prompt is too long"
)


def status_error(
    status: int,
    headers: Mapping[str, str],
    stage: str,
    *,
    message: str | None = None,
    auth_statuses: tuple[int, ...] = (401, 403),
) -> UpstreamFailure:
    """The gateway error for an unexpected HTTP status at ``stage``; ``message`` is the
    upstream's own explanation when its error body had one."""
    detail = f": {message[:300]}" if message else ""
    if status in auth_statuses:
        return UpstreamAuth(
            f"the upstream refused {stage} with HTTP {status}: the token (HF_TOKEN) lacks access "
            "or UPSTREAM_URL is wrong; the operator should check both"
        )
    if status == 429:
        return waiting(
            UpstreamRateLimited,
            f"the upstream is rate limiting the gateway{detail}; retry later",
            headers,
            status,
        )
    if status in (502, 503, 504):
        if message:  # the app itself answered: its queue is full or it is overloaded
            return waiting(
                UpstreamBusy,
                f"the upstream is busy (HTTP {status} on {stage}){detail}; retry later",
                headers,
                503,
            )
        # No explanation in JSON: the platform's page for a Space asleep, building or starting.
        return waiting(
            UpstreamStarting,
            f"the upstream is asleep, building or starting (HTTP {status} on {stage}); retry later",
            headers,
            503,
        )
    if status in (400, 413, 422) and message:
        if _CONTEXT_LENGTH.search(message):
            return UpstreamPromptTooLong(
                f"the prompt and max_new_tokens do not fit the model's context{detail}; "
                "shorten the conversation or ask for fewer tokens"
            )
        return UpstreamRejected(f"the upstream rejected the request{detail}")
    if status == 500:  # before any output: one bad moment of the server, worth one more try
        return UpstreamServerError(f"the upstream failed with HTTP 500{detail}")
    if status == 424 and message:  # TGI's 424: the generation itself failed
        return UpstreamAppError(f"the upstream reported{detail}")
    return UpstreamBadResponse(f"the upstream answered {stage} with HTTP {status}{detail}")


def translate(exc: Exception, *, read_timeout: float, total_timeout: float) -> GatewayError:
    """The gateway error for a transport failure (aiohttp errors and timeouts)."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"the upstream sent nothing for {read_timeout:g} s")
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"no result from the upstream within {total_timeout:g} s")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnreachable(
            "cannot connect to the upstream; it may be down or UPSTREAM_URL may be wrong"
        )
    if isinstance(
        exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientOSError
    ):
        # A ClientOSError that is not a connect error is a reset mid-request.
        return UpstreamDisconnected("the upstream closed the connection before answering")
    return UpstreamUnreachable(f"the connection to the upstream failed ({type(exc).__name__})")


class HTTPOptions(Struct, frozen=True):
    """What every HTTP adapter takes, whatever its protocol: the token, the timeouts (connect,
    silence, whole call, first token), the pool size and the retries before output."""

    token: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 120.0
    max_connections: int = 512
    first_token_timeout: float | None = None
    retries: int = 0
    # The longest Retry-After the gateway waits out itself before a retry.
    retry_after_max: float = RETRY_AFTER_MAX
    # Whether a refused connection is retried in place: not where another upstream is ready
    # (the server is down, not slow to say yes).
    retry_refused: bool = True
    # The gateway's other secrets (API keys, admin and metrics tokens...), redacted from
    # upstream text as the token is.
    secrets: tuple[str, ...] = ()


class HTTPUpstream:
    """The part of every HTTP adapter that is the same: where the upstream is, the token, the
    timeouts, and one pooled session opened by ``start`` and closed by ``aclose``."""

    name = "http"

    def __init__(self, base_url: str, options: HTTPOptions) -> None:
        self.base_url = base_url.rstrip("/")
        self.identity = f"{self.name} {self.base_url}"
        self._token = options.token
        self._connect_timeout = options.connect_timeout
        self._read_timeout = options.read_timeout
        self._total_timeout = options.total_timeout
        self._max_connections = options.max_connections
        self._first_token_timeout = options.first_token_timeout or options.total_timeout
        # Set by the composition root when tracing is on: puts the current span's
        # traceparent into each request's headers.
        self.inject: Callable[[Any], None] | None = None
        self._retries = options.retries
        self._retry_after_max = options.retry_after_max
        self._give_up_on: tuple[type[GatewayError], ...] = (
            () if options.retry_refused else (UpstreamUnreachable,)
        )
        self.redact = Redactor((options.token, *options.secrets))
        self._session: aiohttp.ClientSession | None = None

    def explain(self, body: bytes) -> str | None:
        """The upstream's own explanation in an error body, secrets redacted."""
        message = error_message(body)
        return self.redact(message) if message else None

    async def read_answer(
        self, resp: aiohttp.ClientResponse, what: str, limit: int = MAX_ANSWER_BYTES
    ) -> bytes:
        """``resp``'s whole body, refused past ``limit`` bytes (UpstreamBadResponse,
        ``upstream_too_large``) without holding more than that."""
        declared = resp.content_length
        if declared is not None and declared <= limit and "Content-Encoding" not in resp.headers:
            # A declared length within the limit, not compressed (a compressed answer is
            # counted as it inflates): read in one step, the parser stops at that length.
            return await resp.read()
        size = 0
        chunks: list[bytes] = []
        if declared is None or declared <= limit:
            async for chunk in resp.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > limit:
                    break
                chunks.append(chunk)
            else:
                return b"".join(chunks)
        resp.close()  # the rest is not read: the connection is not reused
        # Freed now, not when the error (whose traceback holds this frame) is: the error is
        # answered, logged and counted in the meantime, and memory freed after that stays
        # with the process.
        chunks.clear()
        raise UpstreamBadResponse(
            f"the upstream's answer to {what} is over {limit} bytes", code="upstream_too_large"
        )

    def auth_headers(self) -> dict[str, str]:
        """How this upstream takes the token."""
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    async def start(self) -> None:
        self._session = new_session(
            headers={"Accept": "application/json", **self.auth_headers()},
            max_connections=self._max_connections,
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            inject=self.inject,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError(f"{type(self).__name__}.start() was not called")
        return self._session

    async def ready(self) -> Readiness:
        raise NotImplementedError

    async def probe(self) -> Readiness:
        """A fresh readiness check (the JSON adapters' ``ready`` always asks the server)."""
        return await self.ready()

    def _translate(self, exc: Exception) -> GatewayError:
        return translate(exc, read_timeout=self._read_timeout, total_timeout=self._total_timeout)

    @contextmanager
    def translated(self) -> Iterator[None]:
        """Every failure inside comes out as a GatewayError: library exceptions (aiohttp,
        timeouts) translated here, once, and each failure shown to ``_note_failure``."""
        try:
            yield
        except Exception as exc:
            error = self._translate(exc)
            self._note_failure(error)
            if error is exc:
                raise
            raise error from None

    async def next_chunk(
        self, reader: BodyReader, *, wait_until: float | None, deadline: float | None
    ) -> bytes:
        """The next chunk of ``reader``'s body (``b""`` at its end), by ``wait_until`` (loop
        time; None: the caller bounds the call). Until output starts, ``wait_until`` is the
        first-token deadline, and missing it is ``upstream_first_token_timeout``; after,
        it is the call's ``deadline``, and missing it is the call's own TimeoutError."""
        try:
            return await reader.read(wait_until)
        except ReadExpired:
            raise self.expired(wait_until, deadline) from None

    def expired(self, wait_until: float | None, deadline: float | None) -> Exception:
        """What a wait that ran past ``wait_until`` raises: the call's own TimeoutError at
        its ``deadline``, else ``upstream_first_token_timeout``."""
        if wait_until == deadline:
            return TimeoutError()
        return UpstreamTimeout(
            f"no first token from the upstream within {self._first_token_timeout:g} s",
            code="upstream_first_token_timeout",
        )

    def _note_failure(self, error: GatewayError) -> None:
        """A call failed with ``error``; adapters that report it in ``ready()`` keep it."""
