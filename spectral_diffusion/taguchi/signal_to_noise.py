"""Taguchi's signal-to-noise ratios (dB) of one row's replicate responses; larger S/N is always better.

Values outside an S/N's domain raise a ``ValueError`` that says why; nothing is dropped silently.
Formulas as in Phadke, *Quality Engineering Using Robust Design* (1989), chapter "Signal-to-Noise Ratios".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SN_TYPES: tuple[str, ...] = (
    "smaller_is_better",
    "larger_is_better",
    "nominal_is_best_mean_var",
    "nominal_is_best_var",
)

# The variance-based ratios need a sample variance, hence two replicates per row.
MIN_REPLICATES: dict[str, int] = {
    "smaller_is_better": 1,
    "larger_is_better": 1,
    "nominal_is_best_mean_var": 2,
    "nominal_is_best_var": 2,
}


def _responses(values: Sequence[float], kind: str) -> np.ndarray:
    y = np.asarray(values, dtype=np.float64).reshape(-1)
    if y.size < MIN_REPLICATES[kind]:
        raise ValueError(f"{kind} needs at least {MIN_REPLICATES[kind]} responses per row, got {y.size}")
    if not np.all(np.isfinite(y)):
        raise ValueError(
            f"{kind}: responses {y.tolist()} include NaN or inf; failed runs must go through the "
            "analysis's missing-run policy, not into an S/N ratio"
        )
    return y


def smaller_is_better(values: Sequence[float]) -> float:
    """-10 log10(mean(y²)) for a non-negative characteristic whose ideal is 0 (an error, an FID).

    A negative response is refused: squaring would rank -5 as bad as +5.
    """
    y = _responses(values, "smaller_is_better")
    if np.any(y < 0):
        raise ValueError(
            f"smaller_is_better assumes a non-negative response whose ideal value is 0; got {y.tolist()}. "
            "Squaring would treat a negative value like its magnitude: shift or transform the response first"
        )
    mean_square = np.mean(y**2)
    if mean_square == 0:
        raise ValueError("smaller_is_better is +inf for responses that are all 0; the S/N is undefined")
    return float(-10.0 * np.log10(mean_square))


def larger_is_better(values: Sequence[float]) -> float:
    """-10 log10(mean(1/y²)) for a positive characteristic where more is better (an accuracy).

    A zero response (1/y² infinite) or a negative one raises; it is never dropped.
    """
    y = _responses(values, "larger_is_better")
    if np.any(y == 0):
        raise ValueError(
            f"larger_is_better: a response of 0 makes 1/y² infinite (responses {y.tolist()}); "
            "the S/N is undefined, so the row cannot be analysed as it stands"
        )
    if np.any(y < 0):
        raise ValueError(f"larger_is_better assumes positive responses; got {y.tolist()}")
    return float(-10.0 * np.log10(np.mean(1.0 / y**2)))


def nominal_is_best_mean_var(values: Sequence[float]) -> float:
    """10 log10(ȳ² / s²), s² the sample variance (n - 1): for a characteristic with a target value whose
    mean can be adjusted afterwards by a scaling factor (Taguchi's two-step optimization)."""
    y = _responses(values, "nominal_is_best_mean_var")
    mean, variance = np.mean(y), np.var(y, ddof=1)
    if variance == 0:
        raise ValueError(f"nominal_is_best_mean_var is +inf: the responses {y.tolist()} have zero variance")
    if mean == 0:
        raise ValueError(f"nominal_is_best_mean_var is -inf: the responses {y.tolist()} have zero mean")
    return float(10.0 * np.log10(mean**2 / variance))


def nominal_is_best_var(values: Sequence[float]) -> float:
    """-10 log10(s²), s² the sample variance (n - 1): for a target characteristic whose mean is
    adjusted additively, so only the spread matters."""
    y = _responses(values, "nominal_is_best_var")
    variance = np.var(y, ddof=1)
    if variance == 0:
        raise ValueError(f"nominal_is_best_var is +inf: the responses {y.tolist()} have zero variance")
    return float(-10.0 * np.log10(variance))


_FUNCTIONS = {
    "smaller_is_better": smaller_is_better,
    "larger_is_better": larger_is_better,
    "nominal_is_best_mean_var": nominal_is_best_mean_var,
    "nominal_is_best_var": nominal_is_best_var,
}


def signal_to_noise(values: Sequence[float], kind: str) -> float:
    """The S/N ratio named ``kind`` (one of ``SN_TYPES``) of one row's responses."""
    if kind not in _FUNCTIONS:
        raise ValueError(f"unknown S/N type {kind!r}; choose one of {list(SN_TYPES)}")
    return _FUNCTIONS[kind](values)
