"""Analysis of a finished Taguchi experiment: S/N per row, response tables, ANOVA with pooling and
percent contribution, best levels and the predicted optimum with its confidence interval.

Conventions follow Ross, *Taguchi Techniques for Quality Engineering* (2nd ed., 1996) and Phadke,
*Quality Engineering Using Robust Design* (1989): pure sum of squares SS' = SS - df·Ve, percent
contribution ρ = SS'/SS_T, and the effective number of replications n_eff = N / (1 + Σ df of the terms
in the prediction). Failed runs are never dropped silently: see ``MISSING_POLICIES``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from spectral_diffusion.taguchi.design import Design, interaction_name
from spectral_diffusion.taguchi.errors import DesignError, MissingRunsError
from spectral_diffusion.taguchi.signal_to_noise import MIN_REPLICATES, SN_TYPES, signal_to_noise

# refuse: any failed job stops the analysis with the list of missing jobs.
# least_squares: rows (S/N) or observations (raw) that are missing get the least-squares fit of the
#   design's model (main effects plus assigned interactions) on the observed data — Yates's (1933)
#   missing-value method — and the error degrees of freedom drop by the number filled in.
MISSING_POLICIES: tuple[str, ...] = ("refuse", "least_squares")
ANOVA_QUANTITIES: tuple[str, ...] = ("sn", "raw")


@dataclass(frozen=True)
class PoolingRule:
    """Taguchi's "pooling up": pool the term with the smallest mean square into the error, then the
    next, while the error has fewer than ``min_error_df`` degrees of freedom, pooling at most
    ``max_pooled_fraction`` of the terms (the smallest half by default, so strong effects are never
    pooled away to manufacture significance)."""

    min_error_df: int = 3
    max_pooled_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.min_error_df < 0:
            raise DesignError(f"PoolingRule.min_error_df={self.min_error_df} must be >= 0")
        if not 0.0 <= self.max_pooled_fraction <= 1.0:
            raise DesignError(f"PoolingRule.max_pooled_fraction={self.max_pooled_fraction} must lie in [0, 1]")

    def describe(self) -> str:
        return (
            f"pooling up: smallest mean squares pooled into error until error df >= {self.min_error_df}, "
            f"at most {self.max_pooled_fraction:.0%} of the terms"
        )


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


def analyze(
    design: Design,
    responses: Any,
    sn: str = "smaller_is_better",
    *,
    anova_on: str = "sn",
    missing: str = "refuse",
    pooling: PoolingRule | str | Sequence[str] = "auto",
    alpha: float = 0.05,
) -> TaguchiResult:
    """Analyse the responses of ``design``'s jobs.

    ``responses``: an array (rows × replicates), a flat sequence in job order, or a mapping
    ``{job: value}``; an absent job, ``None``, NaN or inf is a failed job, handled by ``missing``
    (``"refuse"`` or ``"least_squares"``). ``sn`` names the S/N ratio (``SN_TYPES``). ``anova_on="sn"``
    analyses one S/N value per row (maximised); ``"raw"`` analyses every replicate response, minimised
    for smaller_is_better and maximised for larger_is_better. ``pooling``: ``"auto"`` (the default
    ``PoolingRule``), a ``PoolingRule``, ``"none"``, or the names of the terms to pool (e.g. ``["B", "A×C"]``).
    ``alpha``: significance level of the F tests and 1 - confidence of the interval.
    """
    if sn not in SN_TYPES:
        raise DesignError(f"sn={sn!r} is not an S/N type; choose one of {list(SN_TYPES)}")
    if anova_on not in ANOVA_QUANTITIES:
        raise DesignError(f"anova_on={anova_on!r}; choose one of {list(ANOVA_QUANTITIES)}")
    if missing not in MISSING_POLICIES:
        raise DesignError(f"missing={missing!r}; choose one of {list(MISSING_POLICIES)}")
    if not 0.0 < alpha < 1.0:
        raise DesignError(f"alpha={alpha} must lie in (0, 1)")
    if anova_on == "raw" and sn.startswith("nominal"):
        raise DesignError(
            f"anova_on='raw' with sn={sn!r}: a nominal-the-best response has no single best direction. "
            "Analyse the S/N (anova_on='sn') to reduce variation, then move the mean to target with the "
            "mean response table (Taguchi's two-step optimization)"
        )
    if design.n_replicates < MIN_REPLICATES[sn]:
        raise DesignError(
            f"sn={sn!r} needs at least {MIN_REPLICATES[sn]} replicates per row (a sample variance); "
            f"the design has {design.n_replicates}"
        )

    values, missing_jobs = _response_matrix(design, responses)
    if missing_jobs and missing == "refuse":
        listed = ", ".join(f"job {m.job} (row {m.row}, replicate {m.replicate}: {m.reason})" for m in missing_jobs)
        raise MissingRunsError(
            f"{len(missing_jobs)} of {design.n_jobs} jobs have no finite response: {listed}. Re-run them, "
            "or analyse with missing='least_squares' to fit the main-effects model on the observed rows"
        )

    observed = np.isfinite(values)
    counts = observed.sum(axis=1)
    model = _model_matrix(design)
    sn_rows = counts >= MIN_REPLICATES[sn]
    sn_values = np.full(design.n_rows, np.nan)
    for row in np.flatnonzero(sn_rows):
        try:
            sn_values[row] = signal_to_noise(values[row, observed[row]], sn)
        except ValueError as error:
            jobs = [design.job(row, r) for r in range(design.n_replicates)]
            raise DesignError(f"row {row} (jobs {jobs}, settings {design.settings(row)}): {error}") from None
    sn_values = _fill_rows(model, sn_values, sn_rows, "S/N")
    mean_values = _fill_rows(
        model, np.array([values[r, observed[r]].mean() if counts[r] else np.nan for r in range(design.n_rows)]),
        counts >= 1, "mean",
    )
    std_values, std_omitted = None, False
    if design.n_replicates >= 2:
        stds = np.array([values[r, observed[r]].std(ddof=1) if counts[r] >= 2 else np.nan for r in range(design.n_rows)])
        try:
            std_values = _fill_rows(model, stds, counts >= 2, "std")
        except MissingRunsError:
            # Too few rows keep two replicates for a std; the S/N and mean analysis can still go on.
            std_omitted = True

    if anova_on == "sn":
        analysed, rows = sn_values, np.arange(design.n_rows)
        analysed_observed = sn_rows
        filled_rows = tuple(int(r) for r in np.flatnonzero(~sn_rows))
        filled_observations = len(filled_rows)
    else:
        rows = np.repeat(np.arange(design.n_rows), design.n_replicates)
        flat_observed = observed.reshape(-1)
        analysed = _fill_rows(model[rows], values.reshape(-1).copy(), flat_observed, "response")
        analysed_observed = flat_observed
        filled_rows = ()
        filled_observations = int((~flat_observed).sum())
        mean_values = analysed.reshape(design.n_rows, design.n_replicates).mean(axis=1)

    missing_report = MissingRunReport(
        policy=missing,
        n_jobs=design.n_jobs,
        missing_jobs=tuple(missing_jobs),
        filled_rows=filled_rows,
        filled_observations=filled_observations,
        partial_rows={int(r): int(counts[r]) for r in range(design.n_rows) if 0 < counts[r] < design.n_replicates},
        std_table_omitted=std_omitted,
    )

    tables = {"sn": _response_table(design, sn_values, f"S/N ({sn}, dB)"), "mean": _response_table(design, mean_values, "mean")}
    if std_values is not None:
        tables["std"] = _response_table(design, std_values, "standard deviation")

    anova = _anova(design, analysed, rows, filled_observations, pooling, alpha, "S/N" if anova_on == "sn" else "raw")
    maximize = anova_on == "sn" or sn == "larger_is_better"
    prediction, best_indices = _predict(design, analysed, rows, analysed_observed, anova, maximize, alpha)
    best_levels = {name: design.factor(name).levels[index] for name, index in best_indices.items()}
    interactions = {
        interaction_name(a, b): _interaction_effect(design, (a, b), analysed, rows, sn_values, mean_values)
        for a, b in design.interactions
    }
    return TaguchiResult(
        design=design,
        sn_type=sn,
        anova_on=anova_on,
        alpha=alpha,
        responses=values,
        sn=sn_values,
        mean=mean_values,
        std=std_values,
        response_tables=tables,
        anova=anova,
        best_levels=best_levels,
        best_level_indices=best_indices,
        prediction=prediction,
        interactions=interactions,
        missing=missing_report,
        analysed_values=analysed,
        analysed_rows=rows,
    )


def _response_matrix(design: Design, responses: Any) -> tuple[np.ndarray, list[MissingJob]]:
    """Responses as a (rows × replicates) float matrix with NaN for failed jobs, and the failures."""
    shape = (design.n_rows, design.n_replicates)
    raw: list[Any] = [None] * design.n_jobs
    if isinstance(responses, Mapping):
        for job, value in responses.items():
            design.row_and_replicate(int(job))
            raw[int(job)] = value
    else:
        array = np.asarray(responses, dtype=object)
        if array.shape == shape:
            array = array.reshape(-1)
        if array.shape != (design.n_jobs,):
            raise DesignError(
                f"responses must be {shape[0]} rows × {shape[1]} replicates, {design.n_jobs} values in job "
                f"order, or a mapping job → value; got shape {np.shape(responses)}"
            )
        raw = list(array)
    values = np.full(design.n_jobs, np.nan)
    failures = []
    for job, value in enumerate(raw):
        row, replicate = design.row_and_replicate(job)
        if value is None:
            failures.append(MissingJob(job, row, replicate, "no result"))
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DesignError(f"job {job} (row {row}, replicate {replicate}): response {value!r} is not a number") from None
        if math.isnan(number):
            failures.append(MissingJob(job, row, replicate, "NaN"))
        elif math.isinf(number):
            failures.append(MissingJob(job, row, replicate, "inf"))
        else:
            values[job] = number
    return values.reshape(shape), failures


def _model_matrix(design: Design, terms: Sequence[str] | None = None) -> np.ndarray:
    """Row-level model matrix: intercept, treatment dummies of each factor, and products of dummies
    for each interaction; ``terms`` restricts it to some terms (all by default)."""
    names = set(design.factor_names) | set(design.interaction_names) if terms is None else set(terms)
    return _model_columns(design, {f.name: design.level_indices(f.name) for f in design.factors}, names)


def _model_columns(design: Design, level_indices: Mapping[str, np.ndarray], names: set[str]) -> np.ndarray:
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


def _fill_rows(model: np.ndarray, values: np.ndarray, observed: np.ndarray, what: str) -> np.ndarray:
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


def _level_means(levels: np.ndarray, values: np.ndarray, n_levels: int) -> np.ndarray:
    return np.array([values[levels == level].mean() for level in range(n_levels)])


def _response_table(design: Design, per_row: np.ndarray, characteristic: str) -> ResponseTable:
    means = {f.name: _level_means(design.level_indices(f.name), per_row, f.n_levels) for f in design.factors}
    delta = {name: float(m.max() - m.min()) for name, m in means.items()}
    order = sorted(design.factor_names, key=lambda name: -delta[name])
    return ResponseTable(
        characteristic=characteristic,
        level_values={f.name: f.levels for f in design.factors},
        level_means=means,
        delta=delta,
        rank={name: order.index(name) + 1 for name in design.factor_names},
    )


def _sum_of_squares(levels: np.ndarray, values: np.ndarray, n_levels: int) -> float:
    """Σ over levels of n_level · (level mean - grand mean)²."""
    grand = values.mean()
    return float(sum((levels == l).sum() * (values[levels == l].mean() - grand) ** 2 for l in range(n_levels)))


def _term_sums_of_squares(design: Design, values: np.ndarray, rows: np.ndarray) -> dict[str, tuple[int, float]]:
    """(df, SS) of every factor and assigned interaction; an interaction's SS is that of its level-pair
    cells minus both main effects, which equals the SS of its interaction column(s)."""
    terms: dict[str, tuple[int, float]] = {}
    for factor in design.factors:
        levels = design.level_indices(factor.name)[rows]
        terms[factor.name] = (factor.n_levels - 1, _sum_of_squares(levels, values, factor.n_levels))
    for a, b in design.interactions:
        sa, sb = design.factor(a).n_levels, design.factor(b).n_levels
        cells = design.level_indices(a)[rows] * sb + design.level_indices(b)[rows]
        ss = _sum_of_squares(cells, values, sa * sb) - terms[a][1] - terms[b][1]
        terms[interaction_name(a, b)] = ((sa - 1) * (sb - 1), max(ss, 0.0))
    return terms


def _pooled_terms(
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


def _anova(
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
    terms = _term_sums_of_squares(design, values, rows)

    components: list[tuple[str, int, float]] = []
    column_df = column_ss = 0.0
    for column in design.error_columns:
        levels = design.array.matrix[rows, column]
        s = design.array.levels[column]
        ss = _sum_of_squares(levels, values, s)
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

    pooled, pooling_text = _pooled_terms(terms, error_df, pooling)
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


def _predict(
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
    level_means = {
        f.name: _level_means(design.level_indices(f.name)[rows], values, f.n_levels) for f in design.factors
    }
    cell_means = {}
    for a, b in pairs:
        sa, sb = design.factor(a).n_levels, design.factor(b).n_levels
        cells = design.level_indices(a)[rows] * sb + design.level_indices(b)[rows]
        cell_means[(a, b)] = _level_means(cells, values, sa * sb).reshape(sa, sb)

    def predicted(levels: Mapping[str, int]) -> float:
        value = grand + sum(level_means[f][levels[f]] - grand for f in main)
        for a, b in pairs:
            la, lb = levels[a], levels[b]
            value += cell_means[(a, b)][la, lb] - level_means[a][la] - level_means[b][lb] + grand
        return float(value)

    sign = 1.0 if maximize else -1.0
    best = {
        f.name: int(np.argmax(sign * level_means[f.name])) for f in design.factors
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
        n_eff = 1.0 / _prediction_leverage(design, terms, rows, observed, best)
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


def _prediction_leverage(
    design: Design, terms: Sequence[str], rows: np.ndarray, observed: np.ndarray, levels: Mapping[str, int]
) -> float:
    """x0ᵀ (XᵀX)⁻¹ x0 for the model of ``terms`` fitted on the observed data, x0 the predicted point:
    the prediction's variance in units of σ². For a complete orthogonal array it equals
    (1 + Σ df) / N, Taguchi's 1 / n_eff."""
    model = _model_matrix(design, terms)[rows][observed]
    point_row = _point_row(design, terms, levels)
    return float(point_row @ np.linalg.solve(model.T @ model, point_row))


def _point_row(design: Design, terms: Sequence[str], levels: Mapping[str, int]) -> np.ndarray:
    """The model-matrix row of a factor-level combination (which need not be a row of the array)."""
    point = {f.name: np.array([-1 if levels.get(f.name) is None else levels[f.name]]) for f in design.factors}
    return _model_columns(design, point, set(terms))[0]


def _interaction_effect(
    design: Design,
    pair: tuple[str, str],
    values: np.ndarray,
    rows: np.ndarray,
    sn_values: np.ndarray,
    mean_values: np.ndarray,
) -> InteractionEffect:
    a, b = pair
    columns = design.interactions[pair]
    sa, sb = design.factor(a).n_levels, design.factor(b).n_levels
    all_rows = np.arange(design.n_rows)
    cells = design.level_indices(a) * sb + design.level_indices(b)
    return InteractionEffect(
        pair=pair,
        columns=columns,
        column_level_means={
            c: _level_means(design.array.matrix[rows, c], values, design.array.levels[c]) for c in columns
        },
        cell_sn=_level_means(cells[all_rows], sn_values, sa * sb).reshape(sa, sb),
        cell_mean=_level_means(cells[all_rows], mean_values, sa * sb).reshape(sa, sb),
    )
