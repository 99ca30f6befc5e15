"""``python -m proxy``: serve the gateway (default), inspect a Gradio upstream, or check
the configured upstreams."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from proxy.config.environment import describe_error
from proxy.config.fields import ConfigError
from proxy.config.settings import Settings
from proxy.observe.logs import configure_logging


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ConfigError as exc:
        sys.exit(f"proxy: {describe_error(exc)}")


def serve(args: argparse.Namespace) -> None:
    from proxy.serving.server import serve as run

    run(_settings(host=args.host, port=args.port, web_concurrency=args.workers))


def inspect(args: argparse.Namespace) -> None:
    from proxy.inspect import describe_upstream

    settings = _settings()
    configure_logging("warning", settings.log_format, settings.secrets)
    url = args.url or settings.upstream_url
    if url is None:
        sys.exit("proxy inspect: give a URL or Space id, or set UPSTREAM_URL")
    try:
        print(describe_upstream(url, settings))
    except Exception as exc:  # a CLI: say what failed, no traceback
        sys.exit(f"proxy inspect: {type(exc).__name__}: {exc}")


def check(args: argparse.Namespace) -> None:
    import asyncio

    from proxy.check import report

    settings = _settings()
    configure_logging("error", settings.log_format, settings.secrets)
    text, ok = asyncio.run(report(settings))
    print(text)
    if not ok:
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m proxy", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    serve_cmd = commands.add_parser("serve", help="serve the gateway (the default)")
    for target in (parser, serve_cmd):
        target.add_argument("--host", help="interface to listen on (default: HOST or 127.0.0.1)")
        target.add_argument("--port", type=int, help="port to listen on (default: PORT or 8000)")
        target.add_argument(
            "--workers",
            type=int,
            help="worker processes (default: WEB_CONCURRENCY or 1; more than one needs "
            "REDIS_URL unless rate limits and the cache are off)",
        )
    inspect_cmd = commands.add_parser(
        "inspect", help="print a Gradio app's endpoints and the mapping the gateway will use"
    )
    inspect_cmd.add_argument("url", nargs="?", help="app URL or Space id (default: UPSTREAM_URL)")
    commands.add_parser(
        "check",
        help="show each configured upstream's discovery and, per model, the order they are "
        "tried in (exit status 1 when a model has no upstream ready)",
    )
    args = parser.parse_args(argv)
    if args.command == "inspect":
        inspect(args)
    elif args.command == "check":
        check(args)
    else:
        serve(args)


if __name__ == "__main__":
    main()
