"""What the lifespan builds and the routes use: settings, the model catalogue, the gateway
core, the metrics and the guard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgspec import Struct
from starlette.requests import Request

from proxy.access.guard import Guard
from proxy.config.settings import Settings
from proxy.core.catalog import Catalog
from proxy.core.gateway import Gateway
from proxy.observe.metrics import Metrics

if TYPE_CHECKING:
    from proxy.observe.tracing import Tracing


class AppContext(Struct, frozen=True):
    settings: Settings
    catalog: Catalog
    gateway: Gateway
    metrics: Metrics
    guard: Guard
    tracing: Tracing | None = None


def context_of(request: Request) -> AppContext:
    """The app's context, put into every request's state by the lifespan."""
    ctx: AppContext = request.state.ctx
    return ctx
