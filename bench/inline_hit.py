"""A reference, not the gateway: a cache hit's work written as one ASGI function on the
gateway's own server, to measure what the gateway's layers cost around that work.

Per request it does what a hit does for a client without ``Origin`` or credentials: a request
id, the rate limit counted in the gateway's moving windows with its four ``RateLimit-*``
headers, the body read, the reply looked up by the body's bytes, the 13 headers of the
gateway's hit (``Server-Timing``, ``Vary``, ``X-Cache``, ``Age`` among them), the in-flight
gauge, the request counter and histogram, and the access line through the gateway's own
access log. It skips what the gateway's layers add around that work: the request record
reachable from anywhere, the wrapped ``send``, the guard's caller and origin checks, the
plan of the body, the cache entry's age and TTL, Starlette's response object, the error
layer. ``bench.ratios`` measures it beside the bare app: how far a hit could go in Python.

Run: ``python -m bench.inline_hit PORT``.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import uvicorn

from proxy.access.moving_windows import MovingWindows
from proxy.config.settings import Settings
from proxy.config.values import parse_limits
from proxy.observe.access_log import AccessLog
from proxy.observe.logs import configure_logging
from proxy.observe.metrics import Metrics

Message = MutableMapping[str, Any]
REPLY = orjson.dumps({"generated_text": "x" * 253, "model": "llama-2-7b-chat"})


def inline_hit(rate_limit: str = "100000/second") -> Callable[..., Awaitable[None]]:
    """The ASGI app: every reply is the stored one once its body has been seen."""
    metrics = Metrics()
    counter = metrics.requests.labels("/api/chat", "POST", 200)
    histogram = metrics.request_seconds.labels("/api/chat")
    windows = MovingWindows(parse_limits(rate_limit))
    limit = windows.limits[0]
    access = AccessLog()
    prefix, ids = os.urandom(8).hex(), itertools.count(1)
    replies: dict[bytes, bytes] = {}
    fixed = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(REPLY)),
        (b"x-cache", b"HIT"),
        (b"x-upstream", b"gradio"),
        (b"ratelimit-limit", b"%d" % limit.amount),
        (b"ratelimit-policy", b"%d;w=%d" % (limit.amount, limit.seconds)),
    ]

    async def app(
        scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[..., Any]
    ) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        request_id = f"{prefix}{next(ids):08x}"
        metrics.in_flight.inc()
        count = windows.hit("ip:" + scope["client"][0])
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        reply = replies.get(body)
        if reply is None:
            orjson.loads(body)  # a first sight: parsed once, as a miss would
            reply = replies[body] = REPLY
        elapsed_ms = (time.perf_counter() - started) * 1000
        headers = [
            *fixed,
            (b"age", b"0"),
            (b"ratelimit-remaining", b"%d" % count.remaining),
            (b"ratelimit-reset", b"%d" % int(count.reset + 0.999)),
            (b"x-request-id", request_id.encode()),
            (b"server-timing", f"gateway;dur={elapsed_ms:.2f}".encode()),
            (b"vary", b"Origin"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": reply})
        metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        counter.inc()
        histogram.observe(elapsed)
        access.write(request_id, "POST", "/api/chat", 200, elapsed, "HIT", "gradio", None, None)

    return app


if __name__ == "__main__":
    from proxy.serving import edge

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format, settings.secrets)
    edge.configure(settings)
    uvicorn.run(
        inline_hit(settings.rate_limit or "100000/second"),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_config=None,
        access_log=False,
        server_header=False,
        http="proxy.serving.edge:EdgeProtocol",
        log_level=settings.log_level,
    )
