"""The least-squares model of an orthogonal-array experiment: treatment-coded model matrices of the
design's terms (main effects and assigned interactions), level means, and Yates's (1933) missing-value
method, which fills failed runs with the model's least-squares fit on the observed ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from spectral_diffusion.taguchi.design import Design, interaction_name
from spectral_diffusion.taguchi.errors import MissingRunsError


def model_matrix(design: Design, terms: Sequence[str] | None = None) -> np.ndarray:
    """Row-level model matrix: intercept, treatment dummies of each factor, and products of dummies
    for each interaction; ``terms`` restricts it to some terms (all by default)."""
    names = set(design.factor_names) | set(design.interaction_names) if terms is None else set(terms)
    return model_columns(design, {f.name: design.level_indices(f.name) for f in design.factors}, names)


def model_columns(design: Design, level_indices: Mapping[str, np.ndarray], names: set[str]) -> np.ndarray:
    """Treatment-coded model matrix of the level combinations in ``level_indices`` (factor → level
    index per combination), with the terms in ``names``; shared by the array rows and single points."""
    count = len(next(iter(level_indices.values())))
    dummies = {
        f.name: [(np.asarray(level_indices[f.name]) == level).astype(np.float64) for level in range(1, f.n_levels)]
        for f in design.factors
    }
    columns = [np.ones(count)]
    for factor in design.factor_names:
        if factor in names:
            columns.extend(dummies[factor])
    for a, b in design.interactions:
        if interaction_name(a, b) in names:
            columns.extend(x * y for x in dummies[a] for y in dummies[b])
    return np.stack(columns, axis=1)


def fill_missing(model: np.ndarray, values: np.ndarray, observed: np.ndarray, what: str) -> np.ndarray:
    """Missing entries replaced by the least-squares fit of ``model`` on the observed ones."""
    values = np.array(values, dtype=np.float64)
    if observed.all():
        return values
    fitted_on = model[observed]
    n_parameters = model.shape[1]
    if np.linalg.matrix_rank(fitted_on) < n_parameters:
        raise MissingRunsError(
            f"too many failed runs to fill in the {what}: the design's model has {n_parameters} parameters "
            f"but the {int(observed.sum())} observed entries do not determine them (rank "
            f"{np.linalg.matrix_rank(fitted_on)}); re-run the failed jobs"
        )
    coefficients, *_ = np.linalg.lstsq(fitted_on, values[observed], rcond=None)
    values[~observed] = model[~observed] @ coefficients
    return values


def level_means(levels: np.ndarray, values: np.ndarray, n_levels: int) -> np.ndarray:
    return np.array([values[levels == level].mean() for level in range(n_levels)])


def point_row(design: Design, terms: Sequence[str], levels: Mapping[str, int]) -> np.ndarray:
    """The model-matrix row of a factor-level combination (which need not be a row of the array)."""
    point = {f.name: np.array([-1 if levels.get(f.name) is None else levels[f.name]]) for f in design.factors}
    return model_columns(design, point, set(terms))[0]
