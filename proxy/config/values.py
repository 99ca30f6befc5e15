"""The values settings are made of, and their checks: shared by ``settings.py`` and
``upstreams_file.py``, below both.

Each check takes the raw value and returns it normalised, or raises a ValueError whose message
says what to write instead; ``fields.Record.build`` puts the variable's name in front of it.
"""

from __future__ import annotations

import re
from ipaddress import ip_network
from typing import Literal

from msgspec import Struct

from proxy.core.catalog import MODELS

UpstreamKind = Literal["gradio", "tgi", "openai", "mock"]

SPACE_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_ORIGIN = re.compile(r"^https?://[^/\s]+$")


def space_url(space_id: str) -> str:
    """The public URL of a Space id: ``owner/name`` -> ``https://owner-name.hf.space``."""
    host = space_id.replace("/", "-").replace("_", "-").replace(".", "-").lower()
    return f"https://{host}.hf.space"


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


SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def check_model(name: str) -> str:
    """A model of the catalogue, by its public name."""
    names = [spec.name for spec in MODELS]
    if name not in names:
        raise ValueError(f"{name!r} is not a model; the models are {', '.join(names)}")
    return name


def check_sampler(value: str) -> str:
    """An OTEL_TRACES_SAMPLER the gateway knows (the specification's built-in ones)."""
    value = value.strip().lower()
    if value not in SAMPLERS:
        raise ValueError(f"must be one of: {', '.join(SAMPLERS)}")
    return value


def split_list(value: object) -> object:
    """A comma-separated variable as a tuple of its non-empty parts."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def check_origins(value: tuple[str, ...]) -> tuple[str, ...]:
    """CORS origins without a trailing slash; ``*`` alone or not at all."""
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


def check_networks(value: tuple[str, ...]) -> tuple[str, ...]:
    """IP addresses or networks, or ``*``."""
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


def check_redis_url(value: str | None) -> str | None:
    if value is not None and not re.match(r"^(rediss?|unix)://", value.strip()):
        raise ValueError("must look like redis://host:6379/0, rediss://… or unix:///path")
    return value.strip() if value else None


def parse_model_map(value: object) -> object:
    """``name=upstream-name`` pairs, comma-separated, as a dict."""
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


UNITS = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "month": 30 * 86400,
    "year": 365 * 86400,
}
# The ``limits`` grammar: "10/minute", "10 per 2 hours", several joined by ; , or |.
_ITEM = re.compile(
    r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*(second|minute|hour|day|month|year)s?\s*$", re.IGNORECASE
)
_SEPARATORS = re.compile(r"[;,|]")


class Limit(Struct, frozen=True):
    """``amount`` events per ``multiples`` ``unit``s."""

    amount: int
    multiples: int
    unit: str

    @property
    def seconds(self) -> int:
        return self.multiples * UNITS[self.unit]

    @property
    def window(self) -> str:
        """As a person says it: ``minute``, ``2 hours``."""
        return f"{self.multiples} {self.unit}s" if self.multiples > 1 else self.unit


def parse_limits(spec: str) -> list[Limit]:
    """The limits of ``"60/minute;1000/day"``; a ValueError for anything else."""
    found = []
    for part in _SEPARATORS.split(spec):
        match = _ITEM.match(part)
        if match is None or int(match.group(1)) < 1 or match.group(2) == "0":
            raise ValueError(f"{part.strip()!r} is not a limit such as 60/minute")
        found.append(Limit(int(match.group(1)), int(match.group(2) or 1), match.group(3).lower()))
    return found


def check_limits(value: str, example: str) -> str:
    """``value`` as a ``limits`` spec (``"60/minute;1000/day"``), or a ValueError that shows
    ``example``."""
    value = value.strip()
    try:
        parse_limits(value)
    except ValueError:
        raise ValueError(f"must look like {example}") from None
    return value
