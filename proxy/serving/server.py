"""How the gateway runs as a server: one process, or N uvicorn workers built by a factory.

Workers share what must be exact through Redis (rate limits, the cache, single-flight) and
their metrics through prometheus-client's multiprocess directory. Without REDIS_URL, limits
and the cache would be per worker (N times a client's budget), so the gateway then runs one
worker and says why, rather than loosening a limit silently.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import tempfile
from typing import TYPE_CHECKING

from proxy.config.settings import Settings
from proxy.observe.logs import configure_logging
from proxy.serving.startup import collector_paused, preload_http_client

if TYPE_CHECKING:
    from starlette.applications import Starlette

logger = logging.getLogger("proxy.serving")

# The factory uvicorn imports in each worker process.
FACTORY = "proxy.serving:app_from_environment"


def _built(settings: Settings) -> Starlette:
    """The app, built with the collector paused (and what start-up built, long-lived and
    never needing collection, frozen); then a higher first threshold keeps the collector off
    the per-request path (many short-lived allocations per request)."""
    from proxy.app import create_app

    with collector_paused():
        app = create_app(settings)
    gc.set_threshold(50_000, 20, 20)
    return app


def app_from_environment() -> Starlette:
    """The app of one worker process or function instance, configured from the environment
    it inherited."""
    settings = Settings()
    if settings.reaches_upstreams:
        preload_http_client()
    configure_logging(settings.log_level, settings.log_format, settings.secrets)
    return _built(settings)


def worker_count(settings: Settings) -> int:
    """How many workers to run: WEB_CONCURRENCY (or --workers), unless that would make a
    per-process limit N times looser; then one, with a log line that says how to enable it."""
    wanted = settings.web_concurrency or 1
    shared = settings.state_per_process
    if wanted > 1 and shared is not None:
        logger.warning(
            "serving with 1 worker, not WEB_CONCURRENCY=%d: without REDIS_URL %s would be "
            "counted in each worker, giving every client %d times its budget; set REDIS_URL "
            "to share them and use %d workers",
            wanted,
            shared,
            wanted,
            wanted,
        )
        return 1
    return wanted


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT; in-flight requests get GRACEFUL_TIMEOUT to finish."""
    configure_logging(settings.log_level, settings.log_format, settings.secrets)
    workers = worker_count(settings)
    if workers == 1 and settings.reaches_upstreams:
        preload_http_client()  # while uvicorn and the app are imported (each worker does its own)
    with collector_paused():
        import uvicorn

        from proxy.serving import edge  # uvicorn's protocol classes: a server's, not a function's

    # uvicorn drains, restores the handler it found, then raises the signal again: with this
    # one, a drained shutdown exits 0, as a platform expects of a clean stop.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    edge.configure(settings)
    options = {
        "host": settings.host,
        "port": settings.port,
        "workers": workers,  # always given: uvicorn would read WEB_CONCURRENCY itself
        "log_config": None,
        "log_level": settings.log_level,
        # Forwarded headers are read by the gateway itself, from TRUSTED_PROXIES only.
        "proxy_headers": False,
        "server_header": False,
        "access_log": False,  # the gateway writes its own, without query strings or addresses
        "timeout_graceful_shutdown": settings.graceful_timeout,
        # httptools with bounded heads, head and body deadlines and a connection bound.
        "http": "proxy.serving.edge:EdgeProtocol",
    }
    if workers == 1:
        uvicorn.run(_built(settings), **options)  # type: ignore[arg-type]
        return
    metrics_dir = tempfile.mkdtemp(prefix="proxy-metrics-")
    # Inherited by the workers started below: read by prometheus-client when a worker
    # imports it, and by the worker's settings.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    logger.info("serving with %d workers", workers)
    try:
        uvicorn.run(FACTORY, factory=True, **options)  # type: ignore[arg-type]
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
