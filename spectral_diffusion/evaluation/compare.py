"""Comparison of finished runs over seeds (``sd-compare``): runs grouped by their Hydra overrides without the seed,
per group each metric's mean with a Student t interval over seeds, and between every two groups the difference of
means with a permutation-test p-value (Good 2005, "Permutation, Parametric and Bootstrap Tests of Hypotheses",
ch. 3), paired by seed when both groups ran the same seeds. Markdown, CSV and a figure.
"""

from __future__ import annotations

import csv
import glob
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from matplotlib.figure import Figure
from scipy import stats

from spectral_diffusion.evaluation.names import interval_of
from spectral_diffusion.evaluation.report import is_number, save_figure
from spectral_diffusion.utils.validation import ConfigError

METRICS_FILE = "metrics.json"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
CONFIG_FILE = Path(".hydra") / "config.yaml"
SEED_KEY = "seed"
# Above this many relabellings the permutation distribution is sampled instead of enumerated.
EXACT_LIMIT = 20_000
MAX_PANELS = 16


@dataclass
class Run:
    """One finished run: its folder, overrides without the seed (its group), seed and numeric metrics."""

    folder: Path
    group: str
    seed: int | None
    metrics: dict[str, float]


def _override_key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def read_run(folder: Path) -> Run:
    """A run folder: ``metrics.json`` (required) and ``.hydra/overrides.yaml`` / ``.hydra/config.yaml`` (the group
    and seed; without them the run joins the group "(defaults)" with an unknown seed). The numeric metrics leave out
    intervals (``<key>_ci_*``) and ``objective`` (a copy of another key)."""
    metrics_path = folder / METRICS_FILE
    if not metrics_path.is_file():
        raise ConfigError(f"{folder} has no {METRICS_FILE}: not a finished run")
    try:
        metrics = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{metrics_path} is not valid JSON: {error}") from None
    numeric = {key: float(value) for key, value in metrics.items()
               if is_number(value) and interval_of(key) is None and key != "objective"}
    overrides = yaml.safe_load((folder / OVERRIDES_FILE).read_text()) if (folder / OVERRIDES_FILE).is_file() else []
    kept = sorted(item for item in overrides or []
                  if _override_key(item) != SEED_KEY and not _override_key(item).startswith("hydra."))
    seed = next((item.partition("=")[2] for item in overrides or [] if _override_key(item) == SEED_KEY), None)
    if seed is None and (folder / CONFIG_FILE).is_file():
        seed = (yaml.safe_load((folder / CONFIG_FILE).read_text()) or {}).get(SEED_KEY)
    return Run(folder, " ".join(kept) or "(defaults)", None if seed is None else int(seed), numeric)


def find_runs(patterns: list[str]) -> list[Run]:
    """Runs of every folder or glob in ``patterns``: a folder holding metrics.json is one run; a folder without it
    (a Hydra multirun folder) contributes every subfolder that holds one. ConfigError names a pattern that matches
    nothing and a folder without any metrics.json."""
    folders: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) or ([pattern] if Path(pattern).exists() else [])
        if not matches:
            raise ConfigError(f"{pattern} matches no run folder")
        for match in map(Path, matches):
            if (match / METRICS_FILE).is_file() or not match.is_dir():
                folders.append(match)
                continue
            inner = sorted(path.parent for path in match.glob(f"*/{METRICS_FILE}"))
            folders.extend(inner or [match])  # no run inside: read_run names the folder
    return [read_run(folder) for folder in dict.fromkeys(folders)]


def t_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    """Student t interval of the mean: x̄ ± t_{(1+level)/2, n−1} s/√n (NaN for a single value)."""
    if len(values) < 2:
        return math.nan, math.nan
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def permutation_p_value(first: np.ndarray, second: np.ndarray, *, paired: bool = False,
                        permutations: int = EXACT_LIMIT, seed: int = 0) -> float:
    """Two-sided permutation p-value of the difference of means.

    Unpaired: the group labels are exchangeable under the null, so every split of the pooled values into groups of
    the original sizes is equally likely. Paired: the sign of each within-pair difference is exchangeable. All
    relabellings are enumerated when there are at most ``permutations`` (the exact p-value, the fraction at least
    as extreme as observed); otherwise ``permutations`` random ones give (1 + count) / (1 + permutations).
    """
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    rng = np.random.default_rng(seed)
    tolerance = 1e-12
    if paired:
        differences = first - second
        observed = abs(differences.mean())
        if 2 ** len(differences) <= permutations:
            signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(differences))))
            return float(np.mean(np.abs(signs @ differences / len(differences)) >= observed - tolerance))
        signs = rng.choice((1.0, -1.0), size=(permutations, len(differences)))
        count = np.sum(np.abs(signs @ differences / len(differences)) >= observed - tolerance)
        return float((1 + count) / (1 + permutations))
    pooled = np.concatenate([first, second])
    observed = abs(first.mean() - second.mean())
    size, total = len(first), pooled.sum()

    def statistic(first_sums: np.ndarray) -> np.ndarray:
        return np.abs(first_sums / size - (total - first_sums) / len(second))

    if math.comb(len(pooled), size) <= permutations:
        sums = np.array([pooled[list(chosen)].sum() for chosen in itertools.combinations(range(len(pooled)), size)])
        return float(np.mean(statistic(sums) >= observed - tolerance))
    sums = np.array([pooled[rng.permutation(len(pooled))[:size]].sum() for _ in range(permutations)])
    return float((1 + np.sum(statistic(sums) >= observed - tolerance)) / (1 + permutations))


@dataclass
class Comparison:
    """``groups``: group → its runs; ``metrics``: the metrics every run reports; ``summary`` rows (group, metric,
    n, mean, std, ci_low, ci_high); ``differences`` rows (group_a, group_b, metric, difference, p_value, paired)."""

    groups: dict[str, list[Run]]
    metrics: list[str]
    level: float
    summary: list[dict] = field(default_factory=list)
    differences: list[dict] = field(default_factory=list)


def compare_runs(patterns: list[str], *, metrics: list[str] | None = None, level: float = 0.95,
                 permutations: int = EXACT_LIMIT, seed: int = 0) -> Comparison:
    """Group the runs of ``patterns`` (``find_runs``) and compare every metric they all report (or ``metrics``)."""
    if not 0 < level < 1:
        raise ConfigError(f"level={level!r} is invalid; it must lie strictly inside (0, 1)")
    runs = find_runs(patterns)
    common = set.intersection(*(set(run.metrics) for run in runs))
    if metrics:
        for name in metrics:
            lacking = [str(run.folder) for run in runs if name not in run.metrics]
            if lacking:
                raise ConfigError(f"metric {name!r} is missing from {METRICS_FILE} of {lacking}")
        common = set(metrics)
    if not common:
        raise ConfigError("the runs share no numeric metric; their folders: "
                          + ", ".join(str(run.folder) for run in runs))
    names = sorted(common)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    comparison = Comparison(groups, names, level)
    for group, members in groups.items():
        for name in names:
            values = np.array([run.metrics[name] for run in members])
            low, high = t_interval(values, level)
            comparison.summary.append({"group": group, "metric": name, "n": len(values), "mean": float(values.mean()),
                                       "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                                       "ci_low": low, "ci_high": high})
    for (name_a, runs_a), (name_b, runs_b) in itertools.combinations(groups.items(), 2):
        seeds_a, seeds_b = [run.seed for run in runs_a], [run.seed for run in runs_b]
        paired = (None not in seeds_a and len(set(seeds_a)) == len(seeds_a) and sorted(seeds_a) == sorted(seeds_b)
                  and len(seeds_a) > 1)
        if paired:
            runs_a, runs_b = sorted(runs_a, key=lambda r: r.seed), sorted(runs_b, key=lambda r: r.seed)
        for name in names:
            a = np.array([run.metrics[name] for run in runs_a])
            b = np.array([run.metrics[name] for run in runs_b])
            p_value = permutation_p_value(a, b, paired=paired, permutations=permutations, seed=seed)
            comparison.differences.append({"group_a": name_a, "group_b": name_b, "metric": name,
                                           "difference": float(a.mean() - b.mean()), "p_value": p_value,
                                           "paired": paired})
    return comparison


def _format(value: float) -> str:
    return "—" if isinstance(value, float) and math.isnan(value) else f"{value:.6g}"


def comparison_markdown(comparison: Comparison) -> str:
    """The summary and difference tables as markdown."""
    percent = f"{100 * comparison.level:g} %"
    lines = ["# Run comparison", "", f"{sum(map(len, comparison.groups.values()))} runs in "
             f"{len(comparison.groups)} groups (overrides without the seed); intervals: Student t at {percent} over "
             "the runs of a group; p: two-sided permutation test of the difference of means (paired by seed when "
             "both groups ran the same seeds).", "", "## Groups", "",
             f"| group | metric | n | mean | {percent} interval |", "|---|---|---|---|---|"]
    for row in comparison.summary:
        lines.append(f"| {row['group']} | `{row['metric']}` | {row['n']} | {_format(row['mean'])} | "
                     f"[{_format(row['ci_low'])}, {_format(row['ci_high'])}] |")
    if comparison.differences:
        lines += ["", "## Differences", "", "| group a | group b | metric | mean a − mean b | p | paired |",
                  "|---|---|---|---|---|---|"]
        for row in comparison.differences:
            lines.append(f"| {row['group_a']} | {row['group_b']} | `{row['metric']}` | {_format(row['difference'])} "
                         f"| {row['p_value']:.4g} | {'yes' if row['paired'] else 'no'} |")
    if len(comparison.metrics) > MAX_PANELS:
        lines += ["", f"The figure shows the first {MAX_PANELS} of {len(comparison.metrics)} metrics."]
    return "\n".join(lines) + "\n"


def comparison_figure(comparison: Comparison) -> Figure:
    """One panel per metric (at most ``MAX_PANELS``): each group's runs as dots, its mean and t interval as a bar."""
    names = comparison.metrics[:MAX_PANELS]
    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4 * columns, 3 * rows))
    labels = list(comparison.groups)
    summary = {(row["group"], row["metric"]): row for row in comparison.summary}
    for index, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, index + 1)
        for position, group in enumerate(labels):
            row = summary[(group, name)]
            axes.scatter([position] * row["n"], [run.metrics[name] for run in comparison.groups[group]], s=12,
                         alpha=0.6)
            if not math.isnan(row["ci_low"]):
                axes.errorbar([position], [row["mean"]], yerr=[[row["mean"] - row["ci_low"]],
                                                               [row["ci_high"] - row["mean"]]], fmt="_k", capsize=6)
        axes.set_xticks(range(len(labels)), [str(i + 1) for i in range(len(labels))])
        axes.set_title(name, fontsize=8)
    figure.suptitle("groups: " + "; ".join(f"{i + 1} = {label}" for i, label in enumerate(labels)), fontsize=7)
    figure.tight_layout()
    return figure


def write_comparison(comparison: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """comparison.md, comparison.csv (summary and difference rows in one table) and comparison.png in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = out_dir / "comparison.md"
    markdown.write_text(comparison_markdown(comparison))
    table = out_dir / "comparison.csv"
    columns = ["kind", "group", "group_a", "group_b", "metric", "n", "mean", "std", "ci_low", "ci_high",
               "difference", "p_value", "paired"]
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({"kind": "group", **row} for row in comparison.summary)
        writer.writerows({"kind": "difference", **row} for row in comparison.differences)
    figure = save_figure(comparison_figure(comparison), out_dir / "comparison.png")
    return {"markdown": markdown, "csv": table, "figure": figure}
