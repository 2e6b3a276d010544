"""Config validation: every bad value is reported with its config key and what is allowed.

Components call these in their constructors, so a bad override fails while the run is being
instantiated, before any training starts.
"""

from __future__ import annotations

import numbers
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


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool and not a float that happens to be whole."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(key: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` when it is an integer within [minimum, maximum] (either bound optional)."""
    low = "" if minimum is None else f" >= {minimum}"
    high = "" if maximum is None else f" <= {maximum}"
    bounds = f"{low}{' and' if low and high else ''}{high}"
    if not is_int(value) or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(f"{key}={value!r} is invalid; it must be an integer{bounds}")
    return int(value)


def check_int_list(key: str, values: Any, minimum: int | None = None, *, allow_empty: bool = True) -> list[int]:
    """A list (or tuple, or ListConfig) of integers, each checked as ``key[i]``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(f"{key}={values!r} is invalid; it must be a list of integers")
    values = list(values)
    if not values and not allow_empty:
        raise ConfigError(f"{key}=[] is invalid; give at least one integer")
    return [check_int(f"{key}[{i}]", value, minimum) for i, value in enumerate(values)]


def check_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} is invalid; it must be true or false")
    return value
