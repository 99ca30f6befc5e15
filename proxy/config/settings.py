"""Every setting of the gateway, as one frozen object built once at start-up.

The variables are read by ``environment.py``, converted to their fields' types by
``fields.py`` and checked by ``values.py``; the rest of the code receives a ``Settings``.
Invalid values stop start-up with a message that names each variable and says how to fix it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy.config import environment, values
from proxy.config.fields import Check, ConfigError
from proxy.config.values import SPACE_ID, UpstreamKind
from proxy.config.variables import Caller, Variables

if TYPE_CHECKING:
    from proxy.config.upstreams_file import UpstreamEntry

# Variables that are unset when set to blanks, as platforms leave them.
_BLANK_IS_UNSET = (
    "upstream_url", "upstreams_file", "space_api_name", "space_stream_api_name",
    "system_prompt", "redis_url", "admin_token", "metrics_token", "space_id",
    "web_concurrency", "prometheus_multiproc_dir", "jwt_secret", "jwt_jwks_url", "jwt_issuer",
    "jwt_audience", "jwt_max_lifetime", "otel_exporter_otlp_endpoint",
    "otel_exporter_otlp_traces_endpoint", "otel_exporter_otlp_headers",
)  # fmt: skip
_LISTS = ("trusted_proxies", "api_keys", "allowed_origins", "callers", "jwt_algorithms")


def _blank_is_unset(value: object) -> object:
    return None if isinstance(value, str) and not value.strip() else value


def _check_rate_limit(value: str) -> str:
    if value.strip().lower() in ("", "off", "none", "0"):
        return "off"
    return values.check_limits(value, "30/minute or 30/minute;500/day (or off)")


# Checks of a raw variable, before it is converted to its field's type.
_BEFORE: dict[str, Check] = {
    **dict.fromkeys(_BLANK_IS_UNSET, _blank_is_unset),
    **dict.fromkeys(_LISTS, values.split_list),
    "upstream_model_map": values.parse_model_map,
}
# Checks of a converted value: each returns it normalised.
_AFTER: dict[str, Check] = {
    "auth_failures": lambda v: values.check_limits(v, "10/minute or 10/minute;100/day"),
    "rate_limit": _check_rate_limit,
    "trusted_proxies": values.check_networks,
    "upstream_url": values.check_upstream_url,
    "redis_url": values.check_redis_url,
    "space_api_name": values.check_api_name,
    "space_stream_api_name": values.check_api_name,
    "default_model": values.check_model,
    "allowed_origins": values.check_origins,
    "otel_traces_sampler": values.check_sampler,
}


def _with_space_id(raw: dict[str, Any]) -> dict[str, Any]:
    """A Space id in UPSTREAM_URL is also the id whose runtime stage the Hub reports."""
    url = raw.get("upstream_url")
    if isinstance(url, str) and SPACE_ID.match(url.strip()) and not raw.get("space_id"):
        return {**raw, "space_id": url.strip()}
    return raw


class Settings(Variables):
    """The gateway's configuration; see the README's table for each variable.

    ``Settings()`` reads every variable that names a field (in any case: ``PORT`` or
    ``port``); keyword arguments take precedence (the command line's flags, tests). A
    variable is the string it was set to, converted to its field's type; the list and pair
    variables are split first. Invalid values raise a ConfigError naming each of them.
    """

    _upstreams: tuple[UpstreamEntry, ...]
    _routed: bool

    def __init__(self, **given: Any) -> None:
        raw = _with_space_id({**environment.variables(self.fields()), **given})
        super().__init__(
            **self.build(raw, before=_BEFORE, after=_AFTER), _upstreams=(), _routed=False
        )
        try:
            self._check_combinations()
        except ValueError as exc:
            raise ConfigError([((), str(exc))]) from None

    def _check_combinations(self) -> None:
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
            from proxy.config.upstreams_file import load  # only when a file is named

            upstreams = load(self.upstreams_file, environment.environment())
            object.__setattr__(self, "_upstreams", upstreams)

    @property
    def traces_endpoint(self) -> str | None:
        """Where spans go (OTLP/HTTP), or None: tracing off."""
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint.strip()
        if self.otel_exporter_otlp_endpoint:
            return self.otel_exporter_otlp_endpoint.strip().rstrip("/") + "/v1/traces"
        return None

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
    def reaches_upstreams(self) -> bool:
        """Whether an upstream is reached over HTTP: any adapter but the mock."""
        if self.upstream_entries:
            return any(entry.kind != "mock" for entry in self.upstream_entries)
        return self.effective_upstream != "mock"

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
            # Retried in place a little (a 5xx, a reset, a short Retry-After) before the router
            # moves on, unless its table says otherwise.
            "upstream_retries": self.failover_retries,
            "upstream_retry_after_max": self.failover_retry_after_max,
            **entry.overrides(),
        }
        return self.replace(**values, _routed=True)

    @property
    def routed(self) -> bool:
        """Whether these are one upstream's settings among several (``for_upstream``)."""
        return self._routed

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
                  self.otel_exporter_otlp_headers, *self.api_keys]  # fmt: skip
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
