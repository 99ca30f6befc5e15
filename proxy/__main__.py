"""``python -m proxy``: serve the gateway (default), or inspect a Gradio upstream."""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Any

from pydantic import ValidationError

from proxy.logs import configure_logging
from proxy.settings import Settings, describe_error


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        sys.exit(f"proxy: {describe_error(exc)}")


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from proxy.app import create_app

    settings = _settings(host=args.host, port=args.port)
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings)
    # Long-lived objects built so far never need collecting; a higher first threshold keeps
    # the collector off the per-request path (many short-lived allocations per request).
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        # Forwarded headers are read by the gateway itself, from TRUSTED_PROXIES only.
        proxy_headers=False,
        server_header=False,
        access_log=False,  # the gateway writes its own, without query strings or addresses
        timeout_graceful_shutdown=settings.graceful_timeout,
    )


def inspect(args: argparse.Namespace) -> None:
    from proxy.inspect import describe_upstream

    settings = _settings()
    configure_logging("warning", settings.log_format)
    url = args.url or settings.upstream_url
    if url is None:
        sys.exit("proxy inspect: give a URL or Space id, or set UPSTREAM_URL")
    try:
        print(describe_upstream(url, settings))
    except Exception as exc:  # a CLI: say what failed, no traceback
        sys.exit(f"proxy inspect: {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m proxy", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    serve_cmd = commands.add_parser("serve", help="serve the gateway (the default)")
    for target in (parser, serve_cmd):
        target.add_argument("--host", help="interface to listen on (default: HOST or 127.0.0.1)")
        target.add_argument("--port", type=int, help="port to listen on (default: PORT or 8000)")
    inspect_cmd = commands.add_parser(
        "inspect", help="print a Gradio app's endpoints and the mapping the gateway will use"
    )
    inspect_cmd.add_argument("url", nargs="?", help="app URL or Space id (default: UPSTREAM_URL)")
    args = parser.parse_args(argv)
    if args.command == "inspect":
        inspect(args)
    else:
        serve(args)


if __name__ == "__main__":
    main()
