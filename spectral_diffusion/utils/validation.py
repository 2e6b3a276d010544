"""Config validation: every bad value is reported with its config key and what is allowed.

Components call these in their constructors, so a bad override fails while the run is being
instantiated, before any training starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the key and the allowed values."""


def check_choice(key: str, value: Any, allowed: Iterable[Any]) -> Any:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {allowed}")
    return value


def check_positive(key: str, value: float, *, strict: bool = True) -> float:
    ok = value > 0 if strict else value >= 0
    if not ok:
        relation = "> 0" if strict else ">= 0"
        raise ConfigError(f"{key}={value!r} is invalid; it must be {relation}")
    return value


def check_range(key: str, value: float, low: float, high: float) -> float:
    if not (low <= value <= high):
        raise ConfigError(f"{key}={value!r} is invalid; it must lie in [{low}, {high}]")
    return value
