"""The predicted optimum of a Taguchi experiment: best levels over the unpooled ANOVA terms, the
additive-model prediction and its confidence interval ± t(1 - α/2; df_e)·sqrt(Ve / n_eff), with Taguchi's
n_eff = N / (1 + Σ df) for complete data and 1 / leverage of the predicted point otherwise (Ross 1996;
Phadke 1989).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from spectral_diffusion.taguchi.design import Design, interaction_name
from spectral_diffusion.taguchi.linear_model import level_means, model_matrix, point_row
from spectral_diffusion.taguchi.results import AnovaTable, Prediction


def predict_optimum(
    design: Design,
    values: np.ndarray,
    rows: np.ndarray,
    observed: np.ndarray,
    anova: AnovaTable,
    maximize: bool,
    alpha: float,
) -> tuple[Prediction, dict[str, int]]:
    """Best levels and the predicted optimum over the unpooled terms; an unpooled interaction brings
    its two factors in (a model with A×B but not A is not interpretable)."""
    grand = values.mean()
    unpooled = {r.term for r in anova.rows if not r.pooled}
    pairs = [(a, b) for a, b in design.interactions if interaction_name(a, b) in unpooled]
    main = [f for f in design.factor_names if f in unpooled or any(f in pair for pair in pairs)]
    factor_means = {
        f.name: level_means(design.level_indices(f.name)[rows], values, f.n_levels) for f in design.factors
    }
    cell_means = {}
    for a, b in pairs:
        sa, sb = design.factor(a).n_levels, design.factor(b).n_levels
        cells = design.level_indices(a)[rows] * sb + design.level_indices(b)[rows]
        cell_means[(a, b)] = level_means(cells, values, sa * sb).reshape(sa, sb)

    def predicted(levels: Mapping[str, int]) -> float:
        value = grand + sum(factor_means[f][levels[f]] - grand for f in main)
        for a, b in pairs:
            la, lb = levels[a], levels[b]
            value += cell_means[(a, b)][la, lb] - factor_means[a][la] - factor_means[b][lb] + grand
        return float(value)

    sign = 1.0 if maximize else -1.0
    best = {
        f.name: int(np.argmax(sign * factor_means[f.name])) for f in design.factors
    }
    linked = [f for f in design.factor_names if any(f in pair for pair in pairs)]
    if linked:
        choices = itertools.product(*(range(design.factor(f).n_levels) for f in linked))
        best_linked = max(choices, key=lambda combo: sign * predicted({**best, **dict(zip(linked, combo))}))
        best.update(dict(zip(linked, best_linked)))

    terms = tuple(main) + tuple(interaction_name(a, b) for a, b in pairs)
    used_df = sum(design.factor(f).n_levels - 1 for f in main) + sum(
        (design.factor(a).n_levels - 1) * (design.factor(b).n_levels - 1) for a, b in pairs
    )
    if observed.all():
        n_eff = len(values) / (1 + used_df)
        note = f"n_eff = N / (1 + df of the terms used) = {len(values)} / {1 + used_df}"
    else:
        n_eff = 1.0 / prediction_leverage(design, terms, rows, observed, best)
        note = (
            "n_eff = 1 / leverage of the predicted point in the least-squares fit on the observed data "
            "(Taguchi's N / (1 + df) holds for complete data only)"
        )
    if anova.error_df > 0:
        t = stats.t.ppf(1.0 - alpha / 2.0, anova.error_df)
        half_width = float(t * math.sqrt(anova.error_mean_square / n_eff))
    else:
        half_width = math.nan
        note += "; no error degrees of freedom, so no confidence interval: pool small terms or add replicates"
    prediction = Prediction(
        value=predicted(best),
        terms=terms,
        settings={f: design.factor(f).levels[best[f]] for f in main},
        level_indices={f: best[f] for f in main},
        n_eff=float(n_eff),
        error_df=anova.error_df,
        error_mean_square=anova.error_mean_square,
        alpha=alpha,
        half_width=half_width,
        note=note,
    )
    return prediction, best


def prediction_leverage(
    design: Design, terms: Sequence[str], rows: np.ndarray, observed: np.ndarray, levels: Mapping[str, int]
) -> float:
    """x0ᵀ (XᵀX)⁻¹ x0 for the model of ``terms`` fitted on the observed data, x0 the predicted point:
    the prediction's variance in units of σ². For a complete orthogonal array it equals
    (1 + Σ df) / N, Taguchi's 1 / n_eff."""
    model = model_matrix(design, terms)[rows][observed]
    point = point_row(design, terms, levels)
    return float(point @ np.linalg.solve(model.T @ model, point))
