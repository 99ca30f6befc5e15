"""``python -m proxy check``: the configured upstreams, what each one's discovery finds now
(through the gateway's own adapters, as it will call them), and per model the upstreams in
the order they are tried."""

from __future__ import annotations

import asyncio

from proxy.app import build_upstream_stack
from proxy.config.settings import Settings
from proxy.core.upstream import Readiness
from proxy.observe.metrics import Metrics


async def _discover(settings: Settings, metrics: Metrics) -> Readiness:
    upstream = build_upstream_stack(settings, metrics)
    try:
        await upstream.start()
        return await upstream.ready()
    finally:
        await upstream.aclose()


def _line(name: str, readiness: Readiness) -> str:
    verdict = "ready" if readiness.ready else "NOT READY"
    return f"  {name}: {verdict}: {readiness.detail}"


async def report(settings: Settings) -> tuple[str, bool]:
    """The report, and whether every model has an upstream that is ready now."""
    metrics = Metrics()
    entries = settings.upstream_entries
    if not entries:
        kind = settings.effective_upstream
        single = await _discover(settings, metrics)
        where = settings.upstream_url or "the built-in mock (test mode)"
        lines = [f"one upstream: {kind} {where}", _line(kind, single)]
        return "\n".join(lines), single.ready
    from proxy.config.upstreams_file import describe_order

    found = await asyncio.gather(*(_discover(settings.for_upstream(e), metrics) for e in entries))
    readiness = {entry.name: r for entry, r in zip(entries, found, strict=True)}
    lines = [f"{len(entries)} upstreams from {settings.upstreams_file}:"]
    for entry in entries:
        lines.append(_line(f"{entry.name} ({entry.kind} {entry.url or ''})".replace(" )", ")"),
                           readiness[entry.name]))  # fmt: skip
    lines.append("each model tries, in order (priority, then weight; the load decides ties):")
    every_model_served = True
    for model, order in describe_order(entries).items():
        if not order:
            lines.append(f"  {model}: no upstream (requests get 400 model_not_served)")
            continue
        names = ", ".join(
            f"{e.name} (priority {e.priority}, weight {e.weight}"
            f"{'' if readiness[e.name].ready else ', not ready'})"
            for e in order
        )
        lines.append(f"  {model}: {names}")
        every_model_served &= any(readiness[e.name].ready for e in order)
    return "\n".join(lines), every_model_served
