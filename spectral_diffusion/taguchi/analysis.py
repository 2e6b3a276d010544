"""Analysis of a finished Taguchi experiment: S/N per row, response tables, ANOVA with pooling and
percent contribution, best levels and the predicted optimum with its confidence interval.

Conventions follow Ross, *Taguchi Techniques for Quality Engineering* (2nd ed., 1996) and Phadke,
*Quality Engineering Using Robust Design* (1989): pure sum of squares SS' = SS - df·Ve, percent
contribution ρ = SS'/SS_T, and the effective number of replications n_eff = N / (1 + Σ df of the terms
in the prediction). Failed runs are never dropped silently: see ``MISSING_POLICIES``.

``analyze`` validates its options, summarises the responses row by row (``RowSummary``: S/N, mean, std,
what was missing and filled in) and analyses the chosen quantity (``anova``, ``prediction``); the result
types live in ``results``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spectral_diffusion.taguchi.anova import PoolingRule, anova_table
from spectral_diffusion.taguchi.design import Design, interaction_name
from spectral_diffusion.taguchi.errors import DesignError, MissingRunsError
from spectral_diffusion.taguchi.linear_model import fill_missing, level_means, model_matrix
from spectral_diffusion.taguchi.prediction import predict_optimum
from spectral_diffusion.taguchi.results import (
    InteractionEffect,
    MissingJob,
    MissingRunReport,
    ResponseTable,
    TaguchiResult,
)
from spectral_diffusion.taguchi.signal_to_noise import MIN_REPLICATES, SN_TYPES, signal_to_noise

# refuse: any failed job stops the analysis with the list of missing jobs.
# least_squares: rows (S/N) or observations (raw) that are missing get the least-squares fit of the
#   design's model (main effects plus assigned interactions) on the observed data — Yates's (1933)
#   missing-value method — and the error degrees of freedom drop by the number filled in.
MISSING_POLICIES: tuple[str, ...] = ("refuse", "least_squares")
ANOVA_QUANTITIES: tuple[str, ...] = ("sn", "raw")


@dataclass(frozen=True)
class RowSummary:
    """The responses summarised per row, failed runs filled in, and the quantity the ANOVA analyses:
    ``analysed`` values (one S/N per row, or every replicate response) at array ``rows``, of which
    ``analysed_observed`` were measured rather than filled in."""

    responses: np.ndarray
    sn: np.ndarray
    mean: np.ndarray
    std: np.ndarray | None
    analysed: np.ndarray
    rows: np.ndarray
    analysed_observed: np.ndarray
    missing: MissingRunReport


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
    validate_options(design, sn, anova_on, missing, alpha)
    summary = summarise(design, responses, sn, anova_on, missing)
    return analyse(design, summary, sn, anova_on, pooling, alpha)


def validate_options(design: Design, sn: str, anova_on: str, missing: str, alpha: float) -> None:
    """Refuse options ``analyze`` cannot honour, naming the option and what would work."""
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


def summarise(design: Design, responses: Any, sn: str, anova_on: str, missing: str) -> RowSummary:
    """S/N, mean and standard deviation per row, failed runs refused or filled in by ``missing``."""
    values, missing_jobs = response_matrix(design, responses)
    if missing_jobs and missing == "refuse":
        listed = ", ".join(f"job {m.job} (row {m.row}, replicate {m.replicate}: {m.reason})" for m in missing_jobs)
        raise MissingRunsError(
            f"{len(missing_jobs)} of {design.n_jobs} jobs have no finite response: {listed}. Re-run them, "
            "or analyse with missing='least_squares' to fit the main-effects model on the observed rows"
        )

    observed = np.isfinite(values)
    counts = observed.sum(axis=1)
    model = model_matrix(design)
    sn_rows = counts >= MIN_REPLICATES[sn]
    sn_values = np.full(design.n_rows, np.nan)
    for row in np.flatnonzero(sn_rows):
        try:
            sn_values[row] = signal_to_noise(values[row, observed[row]], sn)
        except ValueError as error:
            jobs = [design.job(row, r) for r in range(design.n_replicates)]
            raise DesignError(f"row {row} (jobs {jobs}, settings {design.settings(row)}): {error}") from None
    sn_values = fill_missing(model, sn_values, sn_rows, "S/N")
    mean_values = fill_missing(
        model, np.array([values[r, observed[r]].mean() if counts[r] else np.nan for r in range(design.n_rows)]),
        counts >= 1, "mean",
    )
    std_values, std_omitted = None, False
    if design.n_replicates >= 2:
        stds = np.array([values[r, observed[r]].std(ddof=1) if counts[r] >= 2 else np.nan for r in range(design.n_rows)])
        try:
            std_values = fill_missing(model, stds, counts >= 2, "std")
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
        analysed = fill_missing(model[rows], values.reshape(-1).copy(), flat_observed, "response")
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

    return RowSummary(
        responses=values,
        sn=sn_values,
        mean=mean_values,
        std=std_values,
        analysed=analysed,
        rows=rows,
        analysed_observed=analysed_observed,
        missing=missing_report,
    )


def analyse(
    design: Design,
    summary: RowSummary,
    sn: str,
    anova_on: str,
    pooling: PoolingRule | str | Sequence[str],
    alpha: float,
) -> TaguchiResult:
    """Response tables, the ANOVA of the analysed quantity, the predicted optimum and interaction effects."""
    sn_values, mean_values, std_values = summary.sn, summary.mean, summary.std
    analysed, rows = summary.analysed, summary.rows

    tables = {"sn": response_table(design, sn_values, f"S/N ({sn}, dB)"),
              "mean": response_table(design, mean_values, "mean")}
    if std_values is not None:
        tables["std"] = response_table(design, std_values, "standard deviation")

    anova = anova_table(design, analysed, rows, summary.missing.filled_observations, pooling, alpha,
                        "S/N" if anova_on == "sn" else "raw")
    maximize = anova_on == "sn" or sn == "larger_is_better"
    prediction, best_indices = predict_optimum(design, analysed, rows, summary.analysed_observed, anova, maximize,
                                               alpha)
    best_levels = {name: design.factor(name).levels[index] for name, index in best_indices.items()}
    interactions = {
        interaction_name(a, b): interaction_effect(design, (a, b), analysed, rows, sn_values, mean_values)
        for a, b in design.interactions
    }
    return TaguchiResult(
        design=design,
        sn_type=sn,
        anova_on=anova_on,
        alpha=alpha,
        responses=summary.responses,
        sn=sn_values,
        mean=mean_values,
        std=std_values,
        response_tables=tables,
        anova=anova,
        best_levels=best_levels,
        best_level_indices=best_indices,
        prediction=prediction,
        interactions=interactions,
        missing=summary.missing,
        analysed_values=analysed,
        analysed_rows=rows,
    )


def response_matrix(design: Design, responses: Any) -> tuple[np.ndarray, list[MissingJob]]:
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


def response_table(design: Design, per_row: np.ndarray, characteristic: str) -> ResponseTable:
    means = {f.name: level_means(design.level_indices(f.name), per_row, f.n_levels) for f in design.factors}
    delta = {name: float(m.max() - m.min()) for name, m in means.items()}
    order = sorted(design.factor_names, key=lambda name: -delta[name])
    return ResponseTable(
        characteristic=characteristic,
        level_values={f.name: f.levels for f in design.factors},
        level_means=means,
        delta=delta,
        rank={name: order.index(name) + 1 for name in design.factor_names},
    )


def interaction_effect(
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
            c: level_means(design.array.matrix[rows, c], values, design.array.levels[c]) for c in columns
        },
        cell_sn=level_means(cells[all_rows], sn_values, sa * sb).reshape(sa, sb),
        cell_mean=level_means(cells[all_rows], mean_values, sa * sb).reshape(sa, sb),
    )
