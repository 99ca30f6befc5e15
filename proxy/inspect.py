"""``python -m proxy inspect``: what a Gradio app offers and how the gateway will call it.

Uses ``gradio_client`` (the optional ``inspect`` extra), never on the request path.
"""

from __future__ import annotations

import os
from typing import Any

from proxy.config.settings import Settings
from proxy.config.values import space_url
from proxy.errors import GatewayError
from proxy.upstreams.gradio_app import AppAPI
from proxy.upstreams.gradio_plan import choose_endpoint, plan_endpoint


def quiet_hub_environment() -> None:
    """Keep huggingface_hub and gradio_client from calling the Hub (telemetry, agent lookups).

    Must run before ``gradio_client`` is imported: both read these variables at import time.
    """
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def describe_upstream(url: str, settings: Settings) -> str:
    """A human-readable report of the app's endpoints and the gateway's argument mapping."""
    quiet_hub_environment()
    try:
        from gradio_client import Client
    except ImportError:
        raise RuntimeError("install the inspect extra: pip install 'proxy[inspect]'") from None

    if "://" not in url and url.count("/") == 1:
        url = space_url(url)
    client = Client(url, token=settings.hf_token_value, verbose=False, download_files=False)
    info: dict[str, Any] = client.view_api(return_format="dict", print_info=False)
    prefix = str(client.config.get("api_prefix") or "").rstrip("/")
    lines = [f"upstream {url} (gradio {client.config.get('version', '?')}, prefix {prefix!r})"]
    for name, endpoint in sorted(info.get("named_endpoints", {}).items()):
        params = ", ".join(str(p.get("parameter_name")) for p in endpoint.get("parameters", []))
        lines.append(f"  endpoint {name}({params})")
    try:
        app = AppAPI.of(info, client.config)
        api_name = choose_endpoint(app, settings.space_api_name)
        plan = plan_endpoint(app, api_name, prefix=prefix)
    except GatewayError as exc:
        lines.append(f"the gateway cannot use this app as configured: {exc.message}")
        return "\n".join(lines)
    lines.append(f"the gateway will call {api_name} via POST {plan.call_path}:")
    lines.extend(f"  {line}" for line in plan.describe())
    return "\n".join(lines)
