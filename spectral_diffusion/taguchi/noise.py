"""Is a factor's effect larger than the noise of the runs? Each run's response interval and, per factor, the
difference between its extreme level means against the least significant difference (LSD) the noise allows.

The noise comes from one of two sources:

- **replicates** (two or more per row): the pooled within-row standard deviation σ̂ of the raw responses,
  with Σ (n_r − 1) degrees of freedom. It holds everything that changes between seeds: training, sampling
  and the finite evaluation set. A row's interval is mean ± t · σ̂ / √n_r.
- **measurement intervals** (one replicate, each job's ``<response>_ci_low`` / ``_ci_high`` from its
  metrics.json, the evaluation's bootstrap interval): σ_j = half-width / z, pooled as √(mean σ_j²), normal
  quantiles. It holds only the evaluation's sampling noise, not the training seed's, so it is a lower bound
  of the replicate noise and an effect it calls "larger than the noise" may still be seed noise (said in
  the report).

A factor's effect is Δ = max − min of its level means of the row mean responses. The two extreme level means
average the row means at those levels, so Var(difference) = σ² Σ_levels (1 / m_l²) Σ_{rows r at l} 1/n_r
(m_l rows at level l); LSD = t · √Var. Δ < LSD means the replicate noise is larger than the factor's effect:
the sweep cannot tell its levels apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from spectral_diffusion.taguchi.design import Design

NOISE_SOURCES = ("replicates", "measurement intervals", "none")


@dataclass(frozen=True)
class RowInterval:
    """A row's mean response and its interval (NaN bounds when there is no noise estimate)."""

    row: int
    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class FactorNoise:
    """A factor's effect (max − min level mean of the raw mean response) against the LSD of that difference."""

    factor: str
    effect: float
    least_significant_difference: float
    levels: tuple[object, object]  # (level with the smallest mean, level with the largest mean)

    @property
    def noise_larger(self) -> bool:
        return not self.effect > self.least_significant_difference


@dataclass(frozen=True)
class NoiseReport:
    source: str
    sigma: float
    df: float
    confidence: float
    rows: tuple[RowInterval, ...]
    factors: tuple[FactorNoise, ...]

    @property
    def note(self) -> str:
        """What the estimate holds and which factors it leaves undecided, in words."""
        if self.source == "none":
            return ("One replicate per row and no measurement intervals in the jobs' metrics.json: the sweep has no "
                    "estimate of its noise, so no effect can be told from noise. Run with replicates (hydra.sweeper."
                    "replicates=2 or more) or an evaluation with `evaluation.bootstrap`.")
        undecided = [f.factor for f in self.factors if f.noise_larger]
        decided = [f.factor for f in self.factors if not f.noise_larger]
        parts = [f"Noise from {self.source}: σ = {self.sigma:.4g} ({'∞' if math.isinf(self.df) else int(self.df)} df), "
                 f"{100 * self.confidence:.0f} % level."]
        if undecided:
            parts.append(f"The replicate noise is larger than the effect of {', '.join(undecided)}: "
                         "these factors' levels cannot be told apart by this sweep.")
        if decided:
            parts.append(f"Effects larger than the noise: {', '.join(decided)}.")
        if self.source == "measurement intervals":
            parts.append("These intervals hold only the evaluation's sampling noise, not the training seed's: a lower "
                         "bound of the replicate noise, so an effect larger than them may still be seed noise.")
        return " ".join(parts)


def noise_report(design: Design, responses: np.ndarray, intervals: Mapping[int, tuple[float, float]] | None = None,
                 alpha: float = 0.05) -> NoiseReport:
    """Row intervals and factor effects against the LSD for ``responses`` (rows × replicates, NaN = failed);
    ``intervals`` maps a job to its measurement interval (used only without replicates)."""
    responses = np.asarray(responses, dtype=np.float64)
    observed = np.isfinite(responses)
    counts = observed.sum(axis=1)
    means = np.array([responses[r, observed[r]].mean() if counts[r] else math.nan for r in range(design.n_rows)])
    confidence = 1.0 - alpha
    source, sigma, df = "none", math.nan, math.nan
    degrees = int(np.clip(counts - 1, 0, None).sum())
    if degrees > 0:
        squares = sum(float(((responses[r, observed[r]] - means[r]) ** 2).sum()) for r in range(design.n_rows)
                      if counts[r] >= 2)
        source, sigma, df = "replicates", math.sqrt(squares / degrees), float(degrees)
    elif intervals:
        z = stats.norm.ppf(1.0 - alpha / 2.0)
        sigmas = [(high - low) / (2.0 * z) for low, high in intervals.values()
                  if math.isfinite(low) and math.isfinite(high)]
        if sigmas:
            source, sigma, df = "measurement intervals", math.sqrt(float(np.mean(np.square(sigmas)))), math.inf
    quantile = (stats.t.ppf(1.0 - alpha / 2.0, df) if math.isfinite(df) else stats.norm.ppf(1.0 - alpha / 2.0)) \
        if source != "none" else math.nan

    rows = []
    for row in range(design.n_rows):
        n = int(counts[row])
        low = high = math.nan
        if source == "replicates" and n:
            half = quantile * sigma / math.sqrt(n)
            low, high = means[row] - half, means[row] + half
        elif source == "measurement intervals" and n:
            job = design.job(row, int(np.flatnonzero(observed[row])[0]))
            low, high = (intervals or {}).get(job, (math.nan, math.nan))
        rows.append(RowInterval(row, float(means[row]), float(low), float(high), n))

    factors = []
    for factor in design.factors:
        indices = design.level_indices(factor.name)
        level_rows = [np.flatnonzero((indices == level) & (counts > 0)) for level in range(factor.n_levels)]
        level_means = np.array([means[r].mean() if len(r) else math.nan for r in level_rows])
        if np.isnan(level_means).all():
            continue
        low_level, high_level = int(np.nanargmin(level_means)), int(np.nanargmax(level_means))
        variance = sum(float((1.0 / counts[level_rows[level]]).sum()) / len(level_rows[level]) ** 2
                       for level in (low_level, high_level))
        lsd = quantile * sigma * math.sqrt(variance) if source != "none" else math.nan
        factors.append(FactorNoise(factor.name, float(level_means[high_level] - level_means[low_level]), lsd,
                                   (factor.levels[low_level], factor.levels[high_level])))
    return NoiseReport(source, sigma, df, confidence, tuple(rows), tuple(factors))


def noise_markdown(report: NoiseReport, design: Design) -> str:
    """The report's "Noise against effects" section: one line per factor and each row's interval."""
    def number(value: float) -> str:
        return "n/a" if not math.isfinite(value) else f"{value:.4g}"

    level = f"{100 * report.confidence:.0f} %"
    factor_lines = [f"| factor | effect (max − min level mean) | LSD ({level}) | verdict |", "|---|---|---|---|"]
    for f in report.factors:
        verdict = ("no noise estimate" if report.source == "none"
                   else "noise larger than the effect" if f.noise_larger else "effect larger than the noise")
        factor_lines.append(f"| {f.factor} | {number(f.effect)} ({f.levels[0]} → {f.levels[1]}) | "
                            f"{number(f.least_significant_difference)} | {verdict} |")
    row_lines = [f"| row | settings | runs | mean response | {level} interval |", "|---|---|---|---|---|"]
    for r in report.rows:
        settings = ", ".join(f"{k}={v}" for k, v in design.settings(r.row).items())
        interval = f"[{number(r.low)}, {number(r.high)}]" if math.isfinite(r.low) else "n/a"
        row_lines.append(f"| {r.row} | {settings} | {r.n} | {number(r.mean)} | {interval} |")
    return ("## Noise against effects\n\n" + report.note + "\n\n" + "\n".join(factor_lines) + "\n\n"
            "Each run's response interval:\n\n" + "\n".join(row_lines) + "\n")
