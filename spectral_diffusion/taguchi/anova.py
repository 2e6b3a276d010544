"""Analysis of variance of an orthogonal-array experiment with Taguchi's pooling: sums of squares of
factors, interactions and unassigned columns, the error built from them, F tests, pure sums of squares
SS' = SS - df·Ve and percent contribution ρ = SS'/SS_T (Ross 1996; Phadke 1989).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from spectral_diffusion.taguchi.design import Design, interaction_name
from spectral_diffusion.taguchi.errors import DesignError, MissingRunsError
from spectral_diffusion.taguchi.results import AnovaRow, AnovaTable
from spectral_diffusion.utils.validation import is_int


@dataclass(frozen=True)
class PoolingRule:
    """Taguchi's "pooling up": pool the term with the smallest mean square into the error, then the
    next, while the error has fewer than ``min_error_df`` degrees of freedom, pooling at most
    ``max_pooled_fraction`` of the terms (the smallest half by default, so strong effects are never
    pooled away to manufacture significance)."""

    min_error_df: int = 3
    max_pooled_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not is_int(self.min_error_df) or self.min_error_df < 0:
            raise DesignError(f"PoolingRule.min_error_df={self.min_error_df!r} must be an integer >= 0")
        if not 0.0 <= self.max_pooled_fraction <= 1.0:
            raise DesignError(f"PoolingRule.max_pooled_fraction={self.max_pooled_fraction} must lie in [0, 1]")

    def describe(self) -> str:
        return (
            f"pooling up: smallest mean squares pooled into error until error df >= {self.min_error_df}, "
            f"at most {self.max_pooled_fraction:.0%} of the terms"
        )


def sum_of_squares(levels: np.ndarray, values: np.ndarray, n_levels: int) -> float:
    """Σ over levels of n_level · (level mean - grand mean)²."""
    grand = values.mean()
    return float(sum((levels == l).sum() * (values[levels == l].mean() - grand) ** 2 for l in range(n_levels)))


def term_sums_of_squares(design: Design, values: np.ndarray, rows: np.ndarray) -> dict[str, tuple[int, float]]:
    """(df, SS) of every factor and assigned interaction; an interaction's SS is that of its level-pair
    cells minus both main effects, which equals the SS of its interaction column(s)."""
    terms: dict[str, tuple[int, float]] = {}
    for factor in design.factors:
        levels = design.level_indices(factor.name)[rows]
        terms[factor.name] = (factor.n_levels - 1, sum_of_squares(levels, values, factor.n_levels))
    for a, b in design.interactions:
        sa, sb = design.factor(a).n_levels, design.factor(b).n_levels
        cells = design.level_indices(a)[rows] * sb + design.level_indices(b)[rows]
        ss = sum_of_squares(cells, values, sa * sb) - terms[a][1] - terms[b][1]
        terms[interaction_name(a, b)] = ((sa - 1) * (sb - 1), max(ss, 0.0))
    return terms


def pooled_terms(
    terms: dict[str, tuple[int, float]], error_df: int, pooling: PoolingRule | str | Sequence[str]
) -> tuple[list[str], str]:
    if isinstance(pooling, str) and pooling == "none":
        return [], "no pooling"
    if isinstance(pooling, str) and pooling == "auto":
        pooling = PoolingRule()
    if isinstance(pooling, PoolingRule):
        limit = int(math.floor(pooling.max_pooled_fraction * len(terms)))
        by_mean_square = sorted(terms, key=lambda t: terms[t][1] / terms[t][0])
        pooled: list[str] = []
        for term in by_mean_square:
            if error_df >= pooling.min_error_df or len(pooled) >= limit:
                break
            pooled.append(term)
            error_df += terms[term][0]
        return pooled, pooling.describe()
    if isinstance(pooling, str):
        raise DesignError(f"pooling={pooling!r}; use 'auto', 'none', a PoolingRule or a list of term names")
    pooled = list(pooling)
    unknown = [t for t in pooled if t not in terms]
    if unknown:
        raise DesignError(f"pooling names unknown term(s) {unknown}; terms are {list(terms)}")
    return pooled, f"pooled as requested: {', '.join(pooled) or 'none'}"


def anova_table(
    design: Design,
    values: np.ndarray,
    rows: np.ndarray,
    n_filled: int,
    pooling: PoolingRule | str | Sequence[str],
    alpha: float,
    quantity: str,
) -> AnovaTable:
    n = len(values)
    grand = values.mean()
    total_ss = float(((values - grand) ** 2).sum())
    terms = term_sums_of_squares(design, values, rows)

    components: list[tuple[str, int, float]] = []
    column_df = column_ss = 0.0
    for column in design.error_columns:
        levels = design.array.matrix[rows, column]
        s = design.array.levels[column]
        ss = sum_of_squares(levels, values, s)
        components.append((f"column {column + 1} (unassigned)", s - 1, ss))
        column_df += s - 1
        column_ss += ss
    row_means = np.array([values[rows == r].mean() for r in range(design.n_rows)])
    between_rows_ss = float(((row_means - grand) ** 2).sum() * (n / design.n_rows))
    terms_df = sum(df for df, _ in terms.values())
    terms_ss = sum(ss for _, ss in terms.values())
    rest_df = design.n_rows - 1 - terms_df - int(column_df)
    if rest_df > 0:
        components.append(("other between-row variation", rest_df, max(between_rows_ss - terms_ss - column_ss, 0.0)))
    if n > design.n_rows:
        components.append(("replicates (within rows)", n - design.n_rows, total_ss - between_rows_ss))
    if n_filled:
        components.append((f"{n_filled} filled-in missing value(s)", -n_filled, 0.0))
    error_df = n - 1 - terms_df - n_filled
    if error_df < 0:
        raise MissingRunsError(
            f"{n_filled} missing value(s) leave {error_df} error degrees of freedom; too many runs failed "
            "for the least-squares policy, re-run them"
        )
    error_ss = max(total_ss - terms_ss, 0.0)

    pooled, pooling_text = pooled_terms(terms, error_df, pooling)
    for term in pooled:
        df, ss = terms[term]
        components.append((f"pooled {term}", df, ss))
        error_df += df
        error_ss += ss
    error_ms = error_ss / error_df if error_df > 0 else math.nan
    unpooled_df = sum(terms[t][0] for t in terms if t not in pooled)

    anova_rows = []
    for term, (df, ss) in terms.items():
        if term in pooled:
            anova_rows.append(AnovaRow(term, df, ss, ss / df, pooled=True))
            continue
        if error_df > 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                f_value = (ss / df) / error_ms if error_ms > 0 else (math.inf if ss > 0 else math.nan)
            p_value = float(stats.f.sf(f_value, df, error_df)) if not math.isnan(f_value) else math.nan
            pure = ss - df * error_ms
        else:
            f_value, p_value, pure = math.nan, math.nan, ss
        percent = 100.0 * pure / total_ss if total_ss > 0 else math.nan
        anova_rows.append(AnovaRow(term, df, ss, ss / df, False, float(f_value), p_value, pure, percent))
    error_pure = error_ss + unpooled_df * error_ms if error_df > 0 else error_ss
    return AnovaTable(
        quantity=quantity,
        rows=tuple(anova_rows),
        error_df=int(error_df),
        error_sum_of_squares=float(error_ss),
        error_mean_square=float(error_ms),
        error_pure_sum_of_squares=float(error_pure),
        error_percent_contribution=100.0 * error_pure / total_ss if total_ss > 0 else math.nan,
        error_components=tuple((label, int(df), float(ss)) for label, df, ss in components),
        total_df=n - 1 - n_filled,
        total_sum_of_squares=total_ss,
        pooling=pooling_text,
    )
