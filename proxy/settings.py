"""Every setting of the gateway, read from the environment in one place.

No other module reads ``os.environ``: the rest of the code receives a frozen ``Settings``.
Invalid values stop start-up with a message that names the variable and says how to fix it.
"""

from __future__ import annotations

import os
import re
from ipaddress import ip_network
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from proxy.catalog import MODELS
from proxy.moving_windows import parse_limits

if TYPE_CHECKING:
    from proxy.upstreams_file import UpstreamEntry

UpstreamKind = Literal["gradio", "tgi", "openai", "mock"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
Fallback = Literal["none", "mock"]
Caller = Literal["anyone", "browser", "key", "token"]
CacheScope = Literal["caller", "shared"]

DEFAULT_ORIGINS = ("http://localhost:*", "http://127.0.0.1:*")
SPACE_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_ORIGIN = re.compile(r"^https?://[^/\s]+$")


def space_url(space_id: str) -> str:
    """The public URL of a Space id: ``owner/name`` -> ``https://owner-name.hf.space``."""
    host = space_id.replace("/", "-").replace("_", "-").replace(".", "-").lower()
    return f"https://{host}.hf.space"


class Settings(BaseModel):
    """The gateway's configuration; see the README's table for each variable.

    ``Settings()`` reads every variable that names a field (in any case: ``PORT`` or
    ``port``); keyword arguments take precedence (the command line's flags, tests). A
    variable is the string it was set to: pydantic converts it, and the list and pair
    variables are split by their validators below.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**_environment(), **values})

    upstream_url: str | None = Field(
        None, description="Gradio app URL or Space id owner/name; unset means test mode."
    )
    upstream_kind: UpstreamKind | None = Field(
        None, description="Upstream adapter; gradio when UPSTREAM_URL is set, else mock."
    )
    test_mode: bool = Field(False, description="Force the mock upstream even with UPSTREAM_URL.")
    hf_token: SecretStr | None = Field(None, description="Sent upstream only.")
    space_api_name: str | None = Field(None, description="Gradio endpoint, e.g. /predict.")
    space_stream_api_name: str | None = Field(
        None, description="Gradio streaming endpoint; /predict_stream when the Space has it."
    )
    upstreams_file: str | None = Field(
        None, description="TOML file of several upstreams (see the README); not with UPSTREAM_URL."
    )
    upstream_model_map: dict[str, str] = Field(
        default_factory=dict,
        description="name=upstream-name pairs, comma-separated (tgi/openai upstreams).",
    )

    allowed_origins: tuple[str, ...] = Field(
        DEFAULT_ORIGINS, description="Comma-separated CORS origins; '*' only when set."
    )
    cors_allow_credentials: bool = Field(False, description="Allow cookies on CORS requests.")

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    log_level: LogLevel = Field("info", description="Log level.")

    upstream_connect_timeout: float = Field(10.0, gt=0, description="Seconds to connect upstream.")
    upstream_read_timeout: float = Field(
        30.0, gt=0, description="Seconds of upstream silence tolerated (heartbeats every 15 s)."
    )
    upstream_timeout: float = Field(120.0, gt=0, description="Total seconds for one generation.")
    upstream_max_connections: int = Field(512, ge=1, description="Pooled upstream connections.")

    max_body_bytes: int = Field(65536, ge=1024, description="Largest accepted request body.")
    max_head_bytes: int = Field(
        32768, ge=1024, le=1048576, description="Largest request line and headers (else 431)."
    )
    max_headers: int = Field(100, ge=10, le=1000, description="Most request headers (else 431).")
    head_timeout: float = Field(
        60.0, gt=0, description="Seconds for a request line and headers to arrive (else 408)."
    )
    body_timeout: float = Field(
        60.0, gt=0, description="Seconds of silence tolerated inside a request body (else 408)."
    )
    body_deadline: float = Field(
        30.0, gt=0, description="Seconds for a whole request body, however it trickles (408)."
    )
    max_connections: int = Field(
        1000, ge=1, description="Open client connections per process (beyond: 503)."
    )
    max_connections_per_address: int = Field(
        0, ge=0, description="Open connections per client address (0: no cap; beyond: 503)."
    )
    max_prompt_chars: int = Field(16000, ge=1, description="Longest accepted prompt.")
    max_new_tokens_limit: int = Field(
        1024, ge=1, le=1024, description="Ceiling for max_new_tokens."
    )
    default_model: str = Field("llama-2-7b-chat", description="Model used when none is given.")
    system_prompt: str | None = Field(
        None, description="System prompt for chat models; a health-assistant prompt if unset."
    )
    mock_latency_ms: int = Field(0, ge=0, le=60000, description="Simulated mock latency.")
    mock_token_delay_ms: int = Field(
        25, ge=0, le=5000, description="Pause between streamed mock tokens."
    )

    cache_enabled: bool = Field(True, description="Cache successful generations.")
    cache_ttl: float = Field(3600.0, gt=0, description="Seconds an entry stays valid.")
    cache_max_entries: int = Field(10000, ge=1, description="Most entries in the memory cache.")
    cache_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Most bytes of replies in the memory cache."
    )
    cache_lock_timeout: float = Field(
        15.0, gt=0, description="Seconds an instance waits for another's identical generation."
    )
    redis_url: str | None = Field(None, description="Share cache and locks through Redis.")
    redis_prefix: str = Field("proxy", min_length=1, description="Prefix of our Redis keys.")
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for DELETE /api/cache; the route is 404 when unset."
    )

    rate_limit: str = Field(
        "60/minute;1000/day",
        description="Per-client limits on generation routes, ';'-separated; 'off' disables.",
    )
    trusted_proxies: tuple[str, ...] = Field(
        (), description="Proxies whose X-Forwarded-For is believed: IPs, CIDRs, or '*'."
    )
    api_keys: tuple[SecretStr, ...] = Field(
        (), description="Comma-separated keys; when set, non-browser calls need a Bearer key."
    )
    callers: tuple[Caller, ...] = Field(
        (),
        description="Who may generate, comma-separated: anyone, browser (an allowed Origin; "
        "browsers only), key (API_KEYS), token (a signed user token). Default: anyone, or "
        "key and/or token when API_KEYS or a JWT setting is set.",
    )
    jwt_secret: SecretStr | None = Field(
        None, description="Shared secret that signs user tokens (HS256)."
    )
    jwt_jwks_url: str | None = Field(
        None, description="The identity provider's JWKS URL, for signed user tokens."
    )
    jwt_issuer: str | None = Field(None, description="The iss every user token must carry.")
    jwt_audience: str | None = Field(None, description="The aud user tokens must carry.")
    jwt_algorithms: tuple[str, ...] = Field(
        (), description="Accepted algorithms; default HS256 with JWT_SECRET, RS256,ES256 else."
    )
    jwt_jwks_refresh: float = Field(
        10.0, gt=0, description="Least seconds between JWKS fetches (an unknown key id asks)."
    )
    jwt_max_lifetime: float | None = Field(
        None, gt=0, description="Longest accepted user-token lifetime, exp - iat (unset: any)."
    )
    auth_failures: str = Field(
        "10/minute",
        description="Failed credentials per client address before 429 (keys, tokens, admin).",
    )
    cache_scope: CacheScope = Field(
        "caller", description="caller: cache entries per key, user or address; shared: one."
    )
    max_concurrency: int = Field(512, ge=1, description="Concurrent upstream generations.")
    queue_timeout: float = Field(
        10.0, ge=0, description="Seconds a request waits for a free slot before a 503."
    )
    upstream_first_token_timeout: float = Field(
        60.0, gt=0, description="Seconds from the call to the first token (or whole reply)."
    )
    upstream_retries: int = Field(
        2, ge=0, le=10, description="Retries of a call that failed before any output."
    )
    upstream_retry_after_max: float = Field(
        5.0, ge=0, description="Longest upstream Retry-After waited out before a retry."
    )
    circuit_failures: int = Field(
        5, ge=1, description="Consecutive upstream failures that open the circuit."
    )
    circuit_cooldown: float = Field(
        30.0, gt=0, description="Seconds the open circuit fails fast before a probe."
    )
    circuit_probe_interval: float = Field(
        2.0, gt=0, description="Seconds between probes while a probed upstream is still down."
    )
    fallback: Fallback = Field(
        "none", description="'mock' answers from the mock while the upstream is unavailable."
    )
    space_id: str | None = Field(
        None, description="owner/name of the Space, to read its runtime stage from the Hub."
    )
    hub_url: str = Field("https://huggingface.co", description="The Hub, for runtime stages.")
    metrics_token: SecretStr | None = Field(
        None, description="Bearer token for GET /metrics; open when unset."
    )
    log_format: LogFormat = Field("text", description="Log lines as text or JSON.")
    access_log: bool = Field(True, description="One log line per request.")
    graceful_timeout: int = Field(
        30, ge=0, description="Seconds in-flight requests get to finish on shutdown."
    )
    web_concurrency: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Worker processes (Heroku sets it); more than one needs REDIS_URL "
        "unless rate limits and the cache are off.",
    )
    prometheus_multiproc_dir: str | None = Field(
        None, description="Set by the gateway for its workers: where they share metrics."
    )
    upstream_cooldown: float = Field(
        5.0, gt=0, description="Seconds a failed upstream is skipped while others can serve."
    )
    upstream_wake_interval: float = Field(
        10.0, gt=0, description="Least seconds between wake-up calls to a skipped cold Space."
    )
    _upstreams: tuple[UpstreamEntry, ...] = PrivateAttr(())

    @field_validator(
        "upstream_url",
        "upstreams_file",
        "space_api_name",
        "space_stream_api_name",
        "system_prompt",
        "redis_url",
        "admin_token",
        "metrics_token",
        "space_id",
        "web_concurrency",
        "prometheus_multiproc_dir",
        "jwt_secret",
        "jwt_jwks_url",
        "jwt_issuer",
        "jwt_audience",
        "jwt_max_lifetime",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="before")
    @classmethod
    def _remember_space_id(cls, data: object) -> object:
        """A Space id in UPSTREAM_URL is also the id whose runtime stage the Hub reports."""
        if isinstance(data, dict):
            url = data.get("upstream_url") or data.get("UPSTREAM_URL")
            if isinstance(url, str) and SPACE_ID.match(url.strip()):
                if not (data.get("space_id") or data.get("SPACE_ID")):
                    data = {**data, "space_id": url.strip()}
        return data

    @field_validator(
        "trusted_proxies", "api_keys", "allowed_origins", "callers", "jwt_algorithms", mode="before"
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        """A comma-separated variable as a tuple of its non-empty parts."""
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("auth_failures")
    @classmethod
    def _check_auth_failures(cls, value: str) -> str:
        return _limits_spec(value, "10/minute or 10/minute;100/day")

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        if value.strip().lower() in ("", "off", "none", "0"):
            return "off"
        return _limits_spec(value, "30/minute or 30/minute;500/day (or off)")

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if item == "*":
                continue
            try:
                ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network such as 10.0.0.0/8 (or '*')"
                ) from None
        return value

    @field_validator("upstream_url")
    @classmethod
    def _check_upstream_url(cls, value: str | None) -> str | None:
        return check_upstream_url(value)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(rediss?|unix)://", value.strip()):
            raise ValueError("must look like redis://host:6379/0, rediss://… or unix:///path")
        return value.strip() if value else None

    @field_validator("upstream_model_map", mode="before")
    @classmethod
    def _parse_model_map(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, target = item.partition("=")
            if not sep or not name.strip() or not target.strip():
                raise ValueError(
                    f"{item!r} is not name=upstream-name, e.g. "
                    "llama-2-7b-chat=meta-llama/Llama-2-7b-chat-hf"
                )
            pairs[name.strip()] = target.strip()
        return pairs

    @field_validator("space_api_name", "space_stream_api_name")
    @classmethod
    def _check_api_name(cls, value: str | None) -> str | None:
        return check_api_name(value)

    @field_validator("default_model")
    @classmethod
    def _check_default_model(cls, value: str) -> str:
        names = [spec.name for spec in MODELS]
        if value not in names:
            raise ValueError(f"must be one of: {', '.join(names)}")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        value = tuple(origin.rstrip("/") for origin in value)
        if not value:
            raise ValueError("must list at least one origin, e.g. http://localhost:3000")
        if "*" in value and len(value) > 1:
            raise ValueError("'*' allows every origin; do not combine it with other origins")
        for origin in value:
            if origin != "*" and not _ORIGIN.match(origin.replace(":*", ":0")):
                raise ValueError(
                    f"{origin!r} is not an origin; write scheme://host[:port] with no path, "
                    "e.g. https://app.example.com or http://localhost:*"
                )
        return value

    @model_validator(mode="after")
    def _check_combinations(self) -> Settings:
        if "*" in self.allowed_origins and self.cors_allow_credentials:
            raise ValueError(
                "ALLOWED_ORIGINS='*' cannot be combined with CORS_ALLOW_CREDENTIALS=1 "
                "(browsers reject it); list the origins explicitly"
            )
        kind = self.upstream_kind
        if kind not in (None, "mock") and self.upstream_url is None and not self.test_mode:
            raise ValueError(f"UPSTREAM_KIND={kind} needs UPSTREAM_URL (the server's URL)")
        if self.upstream_read_timeout > self.upstream_timeout:
            raise ValueError("UPSTREAM_READ_TIMEOUT must not exceed UPSTREAM_TIMEOUT")
        if self.jwt_secret and self.jwt_jwks_url:
            raise ValueError("set JWT_SECRET or JWT_JWKS_URL, not both")
        if self.jwt_jwks_url and not self.jwt_issuer:
            raise ValueError(
                "JWT_JWKS_URL needs JWT_ISSUER: a provider's keys may sign tokens of other "
                "applications, and the issuer tells yours apart"
            )
        if "key" in self.callers and not self.api_keys:
            raise ValueError("CALLERS names key but API_KEYS is empty")
        if "token" in self.callers and not self.jwt_configured:
            raise ValueError("CALLERS names token but neither JWT_SECRET nor JWT_JWKS_URL is set")
        if self.upstreams_file is not None:
            if self.upstream_url is not None:
                raise ValueError(
                    "set UPSTREAMS_FILE or UPSTREAM_URL, not both: the file lists every upstream"
                )
            from proxy.upstreams_file import load  # only when a file is named

            self._upstreams = load(self.upstreams_file, os.environ)
        return self

    @property
    def jwt_configured(self) -> bool:
        return bool(self.jwt_secret or self.jwt_jwks_url)

    @property
    def accepted_callers(self) -> frozenset[Caller]:
        """CALLERS, or its default: anyone while no credential is configured, else only the
        configured credentials (a forgeable Origin is accepted only when named)."""
        if self.callers:
            return frozenset(self.callers)
        found: set[Caller] = set()
        if self.api_keys:
            found.add("key")
        if self.jwt_configured:
            found.add("token")
        return frozenset(found or {"anyone"})

    @property
    def accepted_jwt_algorithms(self) -> tuple[str, ...]:
        if self.jwt_algorithms:
            return self.jwt_algorithms
        return ("HS256",) if self.jwt_secret else ("RS256", "ES256")

    @property
    def effective_upstream(self) -> UpstreamKind:
        """The adapter in use: mock in test mode or with no upstream, else the configured kind."""
        if self.test_mode or self.upstream_url is None:
            return "mock"
        return self.upstream_kind or "gradio"

    @property
    def upstream_entries(self) -> tuple[UpstreamEntry, ...]:
        """The upstreams of UPSTREAMS_FILE (none in test mode): the gateway routes between them."""
        return () if self.test_mode else self._upstreams

    def for_upstream(self, entry: UpstreamEntry) -> Settings:
        """These settings as one upstream of UPSTREAMS_FILE sees them: its own URL, kind,
        token and options, the global values where its table sets none."""
        values: dict[str, Any] = {
            "upstream_url": entry.url,
            "upstream_kind": entry.kind,
            "test_mode": entry.kind == "mock",
            "hf_token": entry.token,
            "space_api_name": entry.space_api_name,
            "space_stream_api_name": entry.space_stream_api_name,
            "upstream_model_map": entry.model_map,
            "space_id": entry.space_id,
            "upstreams_file": None,
            # The router moves on to the next upstream instead of retrying this one, unless
            # its table asks for retries in place.
            "upstream_retries": 0,
            **entry.overrides(),
        }
        return self.model_copy(update=values)

    @property
    def rate_limits(self) -> str | None:
        return None if self.rate_limit == "off" else self.rate_limit

    @property
    def state_per_process(self) -> str | None:
        """What would be counted per process with several workers, or None when nothing
        is: rate limits and the cache live in each process unless REDIS_URL shares them."""
        if self.redis_url:
            return None
        parts = []
        if self.rate_limits:
            parts.append("rate limits")
        if self.cache_enabled:
            parts.append("the cache")
        return " and ".join(parts) or None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value of the configuration, for redaction: tokens, keys and the
        Redis password."""
        values = [self.hf_token, self.admin_token, self.metrics_token, self.jwt_secret,
                  *self.api_keys]  # fmt: skip
        values += [entry.token for entry in self._upstreams]
        found = [v.get_secret_value() for v in values if v is not None]
        if self.redis_url:
            from urllib.parse import urlsplit

            password = urlsplit(self.redis_url).password
            if password:
                found.append(password)
        return tuple(found)

    @property
    def hf_token_value(self) -> str | None:
        return self.hf_token.get_secret_value() if self.hf_token else None


def _environment() -> dict[str, str]:
    """The variables that name a setting, by the setting's name."""
    fields = Settings.model_fields
    return {key.lower(): value for key, value in os.environ.items() if key.lower() in fields}


def check_upstream_url(value: str | None) -> str | None:
    """An upstream's URL, from a URL or a Space id; a ValueError that says what is wrong."""
    if value is None:
        return None
    value = value.strip()
    if SPACE_ID.match(value):
        return space_url(value)
    if not re.match(r"^https?://[^/\s]+", value):
        raise ValueError(
            "must be an http(s) URL such as https://owner-name.hf.space "
            "or a Space id such as owner/name"
        )
    return value.rstrip("/")


def check_api_name(value: str | None) -> str | None:
    """A Gradio endpoint name, with its leading slash."""
    if value is None:
        return None
    value = "/" + value.strip().lstrip("/")
    if not re.fullmatch(r"/[\w.-]+", value):
        raise ValueError("must be a Gradio endpoint name such as /predict")
    return value


def _limits_spec(value: str, example: str) -> str:
    """``value`` as a ``limits`` spec (``"60/minute;1000/day"``), or a ValueError that shows
    ``example``."""
    value = value.strip()
    try:
        parse_limits(value)
    except ValueError:
        raise ValueError(f"must look like {example}") from None
    return value


def describe_error(error: ValidationError) -> str:
    """One line per invalid variable, named as it is set in the environment."""
    lines = []
    for item in error.errors():
        name = "_".join(str(part) for part in item["loc"]).upper() or "configuration"
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{name}: {message}" if item["loc"] else message)
    return "invalid configuration:\n  " + "\n  ".join(lines)
