"""The one reader of the process environment: every other module receives settings.

A variable names a setting in any case (``PORT`` or ``port``); an invalid one is reported by
the name it is set under.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping

from proxy.config.fields import ConfigError


def variables(names: Collection[str]) -> dict[str, str]:
    """The variables that name one of ``names`` (lower-case), by that name."""
    return {key.lower(): value for key, value in os.environ.items() if key.lower() in names}


def environment() -> Mapping[str, str]:
    """The whole environment, read-only: where UPSTREAMS_FILE's ``token_env`` names point."""
    return os.environ


def describe_error(error: ConfigError) -> str:
    """One line per invalid variable, named as it is set in the environment."""
    lines = []
    for loc, message in error.problems:
        name = "_".join(str(part) for part in loc).upper()
        lines.append(f"{name}: {message}" if loc else message)
    return "invalid configuration:\n  " + "\n  ".join(lines)
