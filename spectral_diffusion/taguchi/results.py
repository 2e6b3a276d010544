"""What a Taguchi analysis finds, as frozen dataclasses: response tables, the ANOVA table, the predicted
optimum, interaction effects, the missing-run report and the ``TaguchiResult`` that holds them all.
Conventions of Ross (1996) and Phadke (1989), see ``analysis``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from spectral_diffusion.taguchi.design import Design
from spectral_diffusion.taguchi.errors import DesignError


@dataclass(frozen=True)
class ResponseTable:
    """Mean of one characteristic (S/N, mean or std) at each level of each factor; delta = max - min,
    rank 1 = largest delta."""

    characteristic: str
    level_values: dict[str, tuple]
    level_means: dict[str, np.ndarray]
    delta: dict[str, float]
    rank: dict[str, int]


@dataclass(frozen=True)
class AnovaRow:
    """One term of the ANOVA; a pooled term has its SS in the error and no F, SS' or ρ of its own."""

    term: str
    df: int
    sum_of_squares: float
    mean_square: float
    pooled: bool
    f_value: float = math.nan
    p_value: float = math.nan
    pure_sum_of_squares: float = math.nan
    percent_contribution: float = math.nan


@dataclass(frozen=True)
class AnovaTable:
    """ANOVA of the analysed quantity. ``error_components`` lists what the error is made of, each as
    (label, df, SS): unassigned columns, replicate (within-row) variation, pooled terms, and the
    degrees of freedom lost to filled-in missing values."""

    quantity: str
    rows: tuple[AnovaRow, ...]
    error_df: int
    error_sum_of_squares: float
    error_mean_square: float
    error_pure_sum_of_squares: float
    error_percent_contribution: float
    error_components: tuple[tuple[str, int, float], ...]
    total_df: int
    total_sum_of_squares: float
    pooling: str

    def row(self, term: str) -> AnovaRow:
        for row in self.rows:
            if row.term == term:
                return row
        raise KeyError(f"no ANOVA term {term!r}; terms are {[r.term for r in self.rows]}")

    @property
    def pooled_terms(self) -> tuple[str, ...]:
        return tuple(r.term for r in self.rows if r.pooled)


@dataclass(frozen=True)
class Prediction:
    """Predicted optimum: grand mean + Σ (best-level mean - grand mean) over the terms used, with the
    confidence interval ± t(1 - α/2; error df) · sqrt(Ve / n_eff) (equivalently sqrt(F(α; 1, df_e) Ve / n_eff))."""

    value: float
    terms: tuple[str, ...]
    settings: dict[str, Any]
    level_indices: dict[str, int]
    n_eff: float
    error_df: int
    error_mean_square: float
    alpha: float
    half_width: float
    note: str

    @property
    def interval(self) -> tuple[float, float]:
        return self.value - self.half_width, self.value + self.half_width

    def confirmation_half_width(self, n_confirmation: int) -> float:
        """Half-width for the mean of ``n_confirmation`` confirmation results (one result = one S/N
        value, or one raw response): t · sqrt(Ve · (1/n_eff + 1/n_confirmation))."""
        if n_confirmation < 1:
            raise DesignError(f"n_confirmation={n_confirmation} must be at least 1")
        if not self.error_df > 0:
            return math.nan
        t = stats.t.ppf(1.0 - self.alpha / 2.0, self.error_df)
        return float(t * math.sqrt(self.error_mean_square * (1.0 / self.n_eff + 1.0 / n_confirmation)))


@dataclass(frozen=True)
class InteractionEffect:
    """An assigned interaction: level means of its interaction column(s) in the analysed quantity,
    and tables of S/N and mean for every level pair (rows: first factor's levels) for plotting."""

    pair: tuple[str, str]
    columns: tuple[int, ...]
    column_level_means: dict[int, np.ndarray]
    cell_sn: np.ndarray
    cell_mean: np.ndarray


@dataclass(frozen=True)
class MissingJob:
    job: int
    row: int
    replicate: int
    reason: str


@dataclass(frozen=True)
class MissingRunReport:
    """What failed and what the missing-run policy did about it."""

    policy: str
    n_jobs: int
    missing_jobs: tuple[MissingJob, ...]
    filled_rows: tuple[int, ...]
    filled_observations: int
    partial_rows: dict[int, int]
    std_table_omitted: bool = False

    @property
    def note(self) -> str:
        if not self.missing_jobs:
            return f"All {self.n_jobs} jobs returned a finite response; nothing was filled in."
        listed = ", ".join(f"job {m.job} (row {m.row}, replicate {m.replicate}: {m.reason})" for m in self.missing_jobs)
        parts = [f"{len(self.missing_jobs)} of {self.n_jobs} jobs failed: {listed}."]
        if self.partial_rows:
            partial = ", ".join(f"row {r} from {n} replicate(s)" for r, n in sorted(self.partial_rows.items()))
            parts.append(f"Rows summarised from fewer replicates: {partial}.")
        if self.filled_rows or self.filled_observations:
            what = (
                f"rows {list(self.filled_rows)}" if self.filled_rows else f"{self.filled_observations} observation(s)"
            )
            parts.append(
                f"Policy least_squares: {what} filled with the least-squares fit of the design's model on the "
                "observed data (Yates's missing-value method); the error degrees of freedom are reduced by the "
                "number filled in, and factor sums of squares are slightly biased upward."
            )
        if self.std_table_omitted:
            parts.append("Too few rows kept two replicates to estimate a standard deviation: no std response table.")
        return " ".join(parts)


@dataclass(frozen=True)
class TaguchiResult:
    """Everything ``analyze`` finds; ``report.analysis_markdown`` turns it into a report."""

    design: Design
    sn_type: str
    anova_on: str
    alpha: float
    responses: np.ndarray
    sn: np.ndarray
    mean: np.ndarray
    std: np.ndarray | None
    response_tables: dict[str, ResponseTable]
    anova: AnovaTable
    best_levels: dict[str, Any]
    best_level_indices: dict[str, int]
    prediction: Prediction
    interactions: dict[str, InteractionEffect]
    missing: MissingRunReport
    analysed_values: np.ndarray = field(repr=False)
    analysed_rows: np.ndarray = field(repr=False)

    @property
    def quantity(self) -> str:
        """What the ANOVA and the prediction are about, in words."""
        if self.anova_on == "sn":
            return f"S/N ratio ({self.sn_type}, dB)"
        return "raw response"
