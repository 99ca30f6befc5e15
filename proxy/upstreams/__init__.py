"""Upstream adapters, one module each, chosen by the ``UPSTREAM_KIND`` setting.

Each adapter's module is imported only when it is selected: test mode never loads aiohttp.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.config.settings import Settings
from proxy.config.values import UpstreamKind
from proxy.core.upstream import Readiness, Upstream

if TYPE_CHECKING:
    from proxy.upstreams.http import HTTPOptions


def _mock(settings: Settings) -> Upstream:
    from proxy.upstreams.mock import MockUpstream

    return MockUpstream(
        latency_ms=settings.mock_latency_ms, token_delay_ms=settings.mock_token_delay_ms
    )


def http_options(settings: Settings) -> HTTPOptions:
    """What every HTTP adapter takes, from the settings."""
    from proxy.upstreams.http import HTTPOptions

    return HTTPOptions(
        token=settings.hf_token_value,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        total_timeout=settings.upstream_timeout,
        max_connections=settings.upstream_max_connections,
        first_token_timeout=settings.upstream_first_token_timeout,
        retries=settings.upstream_retries,
        retry_after_max=settings.upstream_retry_after_max,
        retry_refused=not settings.routed,
        secrets=settings.secrets,
    )


def _gradio(settings: Settings) -> Upstream:
    from proxy.upstreams.gradio import GradioUpstream

    assert settings.upstream_url is not None
    return GradioUpstream(
        settings.upstream_url,
        http_options(settings),
        api_name=settings.space_api_name,
        stream_api_name=settings.space_stream_api_name,
        shared_session=settings.space_shared_session,
    )


def _tgi(settings: Settings) -> Upstream:
    from proxy.upstreams.tgi import TGIUpstream

    assert settings.upstream_url is not None
    return TGIUpstream(settings.upstream_url, http_options(settings))


def _openai(settings: Settings) -> Upstream:
    from proxy.upstreams.openai_compat import OpenAICompatUpstream

    assert settings.upstream_url is not None
    return OpenAICompatUpstream(
        settings.upstream_url,
        http_options(settings),
        model_map=settings.upstream_model_map,
        system_prompt=settings.system_prompt,
    )


UPSTREAMS: dict[UpstreamKind, Callable[[Settings], Upstream]] = {
    "mock": _mock,
    "gradio": _gradio,
    "tgi": _tgi,
    "openai": _openai,
}


def build_upstream(settings: Settings) -> Upstream:
    """The adapter the settings select (mock in test mode)."""
    return UPSTREAMS[settings.effective_upstream](settings)


__all__ = ["UPSTREAMS", "Readiness", "Upstream", "build_upstream"]
