"""Every configuration variable: its type, default, bounds and one-line description.

The README's configuration table says the same; ``settings.py`` builds on these fields with
the checks that span several of them and the values that follow from them.
"""

from __future__ import annotations

from typing import Literal

from proxy.config.fields import Record, Secret, field
from proxy.config.values import UpstreamKind

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
Fallback = Literal["none", "mock"]
Caller = Literal["anyone", "browser", "key", "token"]
CacheScope = Literal["caller", "shared"]

DEFAULT_ORIGINS = ("http://localhost:*", "http://127.0.0.1:*")


class Variables(Record):
    """The fields of ``Settings``, one per environment variable (lower-cased)."""

    upstream_url: str | None = field(
        None, description="Gradio app URL or Space id owner/name; unset means test mode."
    )
    upstream_kind: UpstreamKind | None = field(
        None, description="Upstream adapter; gradio when UPSTREAM_URL is set, else mock."
    )
    test_mode: bool = field(False, description="Force the mock upstream even with UPSTREAM_URL.")
    hf_token: Secret | None = field(None, description="Sent upstream only.")
    space_api_name: str | None = field(None, description="Gradio endpoint, e.g. /predict.")
    space_stream_api_name: str | None = field(
        None, description="Gradio streaming endpoint; /predict_stream when the Space has it."
    )
    space_shared_session: bool = field(
        True,
        description="Calls to a Space event that keeps nothing per session share one session.",
    )
    upstreams_file: str | None = field(
        None, description="TOML file of several upstreams (see the README); not with UPSTREAM_URL."
    )
    upstream_model_map: dict[str, str] = field(
        default_factory=dict,
        description="name=upstream-name pairs, comma-separated (tgi/openai upstreams).",
    )

    allowed_origins: tuple[str, ...] = field(
        DEFAULT_ORIGINS, description="Comma-separated CORS origins; '*' only when set."
    )
    cors_allow_credentials: bool = field(False, description="Allow cookies on CORS requests.")

    host: str = field("127.0.0.1", description="Interface to listen on.")
    port: int = field(8000, ge=1, le=65535, description="TCP port to listen on.")
    log_level: LogLevel = field("info", description="Log level.")

    upstream_connect_timeout: float = field(10.0, gt=0, description="Seconds to connect upstream.")
    upstream_read_timeout: float = field(
        30.0, gt=0, description="Seconds of upstream silence tolerated (heartbeats every 15 s)."
    )
    upstream_timeout: float = field(120.0, gt=0, description="Total seconds for one generation.")
    upstream_max_connections: int = field(512, ge=1, description="Pooled upstream connections.")

    max_body_bytes: int = field(65536, ge=1024, description="Largest accepted request body.")
    max_head_bytes: int = field(
        32768, ge=1024, le=1048576, description="Largest request line and headers (else 431)."
    )
    max_headers: int = field(100, ge=10, le=1000, description="Most request headers (else 431).")
    head_timeout: float = field(
        60.0, gt=0, description="Seconds for a request line and headers to arrive (else 408)."
    )
    body_timeout: float = field(
        60.0, gt=0, description="Seconds of silence tolerated inside a request body (else 408)."
    )
    body_deadline: float = field(
        30.0, gt=0, description="Seconds for a whole request body, however it trickles (408)."
    )
    max_connections: int = field(
        1000, ge=1, description="Open client connections per process (beyond: 503)."
    )
    max_connections_per_address: int = field(
        0, ge=0, description="Open connections per client address (0: no cap; beyond: 503)."
    )
    max_prompt_chars: int = field(16000, ge=1, description="Longest accepted prompt.")
    max_new_tokens_limit: int = field(
        1024, ge=1, le=1024, description="Ceiling for max_new_tokens."
    )
    default_model: str = field("llama-2-7b-chat", description="Model used when none is given.")
    system_prompt: str | None = field(
        None, description="System prompt for chat models; a health-assistant prompt if unset."
    )
    mock_latency_ms: int = field(0, ge=0, le=60000, description="Simulated mock latency.")
    mock_token_delay_ms: int = field(
        25, ge=0, le=5000, description="Pause between streamed mock tokens."
    )

    cache_enabled: bool = field(True, description="Cache successful generations.")
    cache_ttl: float = field(3600.0, gt=0, description="Seconds an entry stays valid.")
    cache_max_entries: int = field(10000, ge=1, description="Most entries in the memory cache.")
    cache_max_bytes: int = field(
        64 * 1024 * 1024, ge=1024, description="Most bytes of replies in the memory cache."
    )
    cache_lock_timeout: float = field(
        15.0,
        gt=0,
        description="Seconds a dead instance's single-flight lock outlives it (Redis).",
    )
    redis_url: str | None = field(None, description="Share cache and locks through Redis.")
    redis_prefix: str = field("proxy", pattern=r"^\S+$", description="Prefix of our Redis keys.")
    admin_token: Secret | None = field(
        None, description="Bearer token for DELETE /api/cache; the route is 404 when unset."
    )

    rate_limit: str = field(
        "60/minute;1000/day",
        description="Per-client limits on generation routes, ';'-separated; 'off' disables.",
    )
    trusted_proxies: tuple[str, ...] = field(
        (), description="Proxies whose X-Forwarded-For is believed: IPs, CIDRs, or '*'."
    )
    api_keys: tuple[Secret, ...] = field(
        (), description="Comma-separated keys; when set, non-browser calls need a Bearer key."
    )
    callers: tuple[Caller, ...] = field(
        (),
        description="Who may generate, comma-separated: anyone, browser (an allowed Origin; "
        "browsers only), key (API_KEYS), token (a signed user token). Default: anyone, or "
        "key and/or token when API_KEYS or a JWT setting is set.",
    )
    jwt_secret: Secret | None = field(
        None, description="Shared secret that signs user tokens (HS256)."
    )
    jwt_jwks_url: str | None = field(
        None, description="The identity provider's JWKS URL, for signed user tokens."
    )
    jwt_issuer: str | None = field(None, description="The iss every user token must carry.")
    jwt_audience: str | None = field(None, description="The aud user tokens must carry.")
    jwt_algorithms: tuple[str, ...] = field(
        (), description="Accepted algorithms; default HS256 with JWT_SECRET, RS256,ES256 else."
    )
    jwt_jwks_refresh: float = field(
        10.0, gt=0, description="Least seconds between JWKS fetches (an unknown key id asks)."
    )
    jwt_max_lifetime: float | None = field(
        None, gt=0, description="Longest accepted user-token lifetime, exp - iat (unset: any)."
    )
    auth_failures: str = field(
        "10/minute",
        description="Failed credentials per client address before 429 (keys, tokens, admin).",
    )
    cache_scope: CacheScope = field(
        "caller", description="caller: cache entries per key, user or address; shared: one."
    )
    max_concurrency: int = field(512, ge=1, description="Concurrent upstream generations.")
    queue_timeout: float = field(
        10.0, ge=0, description="Seconds a request waits for a free slot before a 503."
    )
    upstream_first_token_timeout: float = field(
        60.0, gt=0, description="Seconds from the call to the first token (or whole reply)."
    )
    upstream_retries: int = field(
        2, ge=0, le=10, description="Retries of a call that failed before any output."
    )
    upstream_retry_after_max: float = field(
        5.0, ge=0, description="Longest upstream Retry-After waited out before a retry."
    )
    circuit_failures: int = field(
        5, ge=1, description="Consecutive upstream failures that open the circuit."
    )
    circuit_cooldown: float = field(
        30.0, gt=0, description="Seconds the open circuit fails fast before a probe."
    )
    circuit_probe_interval: float = field(
        2.0, gt=0, description="Seconds between probes while a probed upstream is still down."
    )
    fallback: Fallback = field(
        "none", description="'mock' answers from the mock while the upstream is unavailable."
    )
    space_id: str | None = field(
        None, description="owner/name of the Space, to read its runtime stage from the Hub."
    )
    hub_url: str = field("https://huggingface.co", description="The Hub, for runtime stages.")
    metrics_token: Secret | None = field(
        None, description="Bearer token for GET /metrics; open when unset."
    )
    log_format: LogFormat = field("text", description="Log lines as text or JSON.")
    access_log: bool = field(True, description="One log line per request.")
    graceful_timeout: int = field(
        30, ge=0, description="Seconds in-flight requests get to finish on shutdown."
    )
    web_concurrency: int | None = field(
        None,
        ge=1,
        le=64,
        description="Worker processes (Heroku sets it); more than one needs REDIS_URL "
        "unless rate limits and the cache are off.",
    )
    prometheus_multiproc_dir: str | None = field(
        None, description="Set by the gateway for its workers: where they share metrics."
    )
    upstream_cooldown: float = field(
        5.0, gt=0, description="Seconds a failed upstream is skipped while others can serve."
    )
    failover_retries: int = field(
        1,
        ge=0,
        le=10,
        description="With several upstreams: retries in place (a 5xx, a reset, "
        "a short Retry-After) before moving on; a table's upstream_retries overrides.",
    )
    failover_retry_after_max: float = field(
        3.0,
        ge=0,
        description="With several upstreams: the longest Retry-After waited out in "
        "place; a longer one moves on at once.",
    )
    failover_first_token_timeout: float = field(
        10.0,
        gt=0,
        description="With several upstreams: seconds to a stream's first token "
        "while another upstream could take it (else UPSTREAM_FIRST_TOKEN_TIMEOUT).",
    )
    otel_exporter_otlp_endpoint: str | None = field(
        None, description="OTLP/HTTP collector base URL; set, it turns tracing on (/v1/traces)."
    )
    otel_exporter_otlp_traces_endpoint: str | None = field(
        None, description="The full OTLP/HTTP traces URL; wins over the base URL."
    )
    otel_exporter_otlp_headers: Secret | None = field(
        None, description="Headers for the collector, key=value comma-separated (API keys)."
    )
    otel_service_name: str = field("proxy", description="service.name of the traces.")
    otel_traces_sampler: str = field(
        "parentbased_always_on",
        description="always_on, always_off, traceidratio or their parentbased_ forms.",
    )
    otel_traces_sampler_arg: float = field(
        1.0, ge=0, le=1, description="The ratio of traceidratio samplers."
    )
    trace_content: bool = field(
        False, description="Development only: prompt and reply text in spans (health data)."
    )
    upstream_wake_interval: float = field(
        10.0, gt=0, description="Least seconds between wake-up calls to a skipped cold Space."
    )
