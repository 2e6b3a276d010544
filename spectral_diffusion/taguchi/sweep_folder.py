"""A Taguchi sweep on disk: the design, each job's result, and the analysis written beside them.

Shared by the Hydra sweeper (which runs the jobs) and ``sd-taguchi analyze`` (which re-reads them).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spectral_diffusion.taguchi.analysis import analyze
from spectral_diffusion.taguchi.arrays import get_array
from spectral_diffusion.taguchi.design import Design, Factor
from spectral_diffusion.taguchi.errors import DesignError
from spectral_diffusion.taguchi.noise import noise_markdown, noise_report
from spectral_diffusion.taguchi.report import analysis_markdown, plot_interaction, plot_main_effects
from spectral_diffusion.taguchi.results import TaguchiResult
from spectral_diffusion.taguchi.signal_to_noise import MIN_REPLICATES, SN_TYPES, signal_to_noise

SPEC_FILE = "taguchi.json"
DESIGN_FILE = "design.csv"
RESULTS_FILE = "results.csv"
CONFIRMATION_FILE = "confirmation.csv"
ANALYSIS_FILE = "analysis.md"
RESPONSE_TABLES_FILE = "response_tables.csv"
ANOVA_FILE = "anova.csv"
MAIN_EFFECTS_FILE = "main_effects.png"
TENSORBOARD_DIR = "tensorboard"
METRICS_FILE = "metrics.json"

# sn=auto: smaller_is_better or larger_is_better, whichever way the response improves (for the objective: the
# objective_direction each job's metrics.json records), decided once the jobs have run.
AUTO_SN = "auto"
SWEEP_SN_TYPES = (AUTO_SN, *SN_TYPES)
SN_OF_DIRECTION = {"minimize": "smaller_is_better", "maximize": "larger_is_better"}
OBJECTIVE = "objective"

# A job's outcome: ok, the task raised (failed), metrics.json lacks the response, or it is NaN/inf.
JOB_STATUSES = ("ok", "failed", "missing_response", "non_finite")
# What the sweep's on_failure setting means for the analysis of a sweep with failed jobs.
MISSING_POLICY_OF = {"abort": "refuse", "record": "least_squares"}


@dataclass(frozen=True)
class SweepSpec:
    """What a sweep folder's analysis needs besides the results: the design, the response key of
    metrics.json, the S/N type and the failure policy (``abort`` or ``record``)."""

    design: Design
    response: str
    sn: str
    on_failure: str
    overrides: tuple[tuple[str, ...], ...] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        design = self.design
        return {
            "array": design.array.name,
            "factors": [
                {"name": f.name, "levels": list(f.levels), "column": design.columns[f.name] + 1}
                for f in design.factors
            ],
            "interactions": [list(pair) for pair in design.interactions],
            "replicates": list(design.replicate_labels),
            "response": self.response,
            "sn": self.sn,
            "on_failure": self.on_failure,
            "jobs": [{"job": job, "overrides": list(o)} for job, o in enumerate(self.overrides)],
            "settings": dict(self.settings),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SweepSpec:
        array = get_array(data["array"])
        factors = tuple(Factor(f["name"], f["levels"]) for f in data["factors"])
        columns = {f["name"]: int(f["column"]) - 1 for f in data["factors"]}
        interactions = {
            (a, b): array.interaction_columns(columns[a], columns[b]) for a, b in data.get("interactions", [])
        }
        design = Design(array, factors, columns, interactions, tuple(data["replicates"]))
        overrides = tuple(tuple(j["overrides"]) for j in sorted(data.get("jobs", []), key=lambda j: j["job"]))
        return cls(design, data["response"], data["sn"], data["on_failure"], overrides, data.get("settings", {}))

    def save(self, sweep_dir: str | Path) -> Path:
        path = Path(sweep_dir) / SPEC_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, sweep_dir: str | Path) -> SweepSpec:
        path = Path(sweep_dir) / SPEC_FILE
        if not path.is_file():
            raise DesignError(f"{path} does not exist: not a folder written by the Taguchi sweeper")
        return cls.from_json(json.loads(path.read_text()))


@dataclass(frozen=True)
class JobResult:
    """The response of one job read from its ``metrics.json``; ``value`` is None unless status is ok."""

    job: int
    row: int
    replicate: int
    seed: Any
    status: str
    value: float | None
    output_dir: str
    error: str = ""
    interval: tuple[float, float] | None = None  # the response's measurement interval, when metrics.json has one


def read_response(output_dir: str | Path, response: str) -> tuple[str, float | None, str]:
    """(status, value, reason) of the key ``response`` in ``output_dir/metrics.json``."""
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return "missing_response", None, f"{path} does not exist"
    metrics = json.loads(path.read_text())
    if response not in metrics:
        numeric = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        return "missing_response", None, f"{METRICS_FILE} has no key {response!r}; its numeric keys: {numeric}"
    try:
        value = float(metrics[response])
    except (TypeError, ValueError):
        return "missing_response", None, f"{METRICS_FILE}[{response!r}]={metrics[response]!r} is not a number"
    if not math.isfinite(value):
        return "non_finite", None, f"{METRICS_FILE}[{response!r}] is {value}"
    return "ok", value, ""


def response_direction(key: str) -> str | None:
    """``"minimize"``, ``"maximize"`` or None: the direction of a metrics.json key (evaluation.names)."""
    from spectral_diffusion.evaluation.names import metric_direction  # imported late: it loads torch

    return metric_direction(key)


def _objective_direction(output_dir: str | Path) -> tuple[str, str | None] | None:
    """(objective_name, direction) of one job's metrics.json; None when it has none."""
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    name = metrics.get("objective_name")
    if name is None:
        return None
    # runs written before objective_direction existed: the direction of the metric the objective names
    return name, metrics["objective_direction"] if "objective_direction" in metrics else response_direction(name)


def resolve_sn(spec: SweepSpec, results: Sequence[JobResult], sweep_dir: str | Path) -> SweepSpec:
    """``spec`` with ``sn=auto`` replaced by smaller_is_better or larger_is_better: the direction of the response
    key (``spec.response=objective``: of the metric each finished job optimised, read from its metrics.json) and
    the reason under ``settings["sn_auto"]``. A DesignError when the response has no direction (a ratio, a count)
    or the jobs' objectives disagree; any other ``sn`` is returned unchanged."""
    if spec.sn != AUTO_SN:
        return spec
    fix = (f"name the S/N: sd-taguchi analyze {sweep_dir} sn=<one of {list(SN_TYPES)}> (or "
           f"hydra.sweeper.sn=... for a new sweep)")
    if spec.response != OBJECTIVE:
        names = {spec.response: response_direction(spec.response)}
    else:
        found = [_objective_direction(job_folder(sweep_dir, r.output_dir)) for r in results if r.status == "ok"]
        names = dict(item for item in found if item is not None)
    directions = set(names.values())
    if not names:
        sn, reason = "smaller_is_better", "no finished job recorded its objective; smaller_is_better assumed"
    elif len(directions) == 1 and next(iter(directions)) in SN_OF_DIRECTION:
        direction = next(iter(directions))
        sn = SN_OF_DIRECTION[direction]
        reason = f"sn=auto: {' / '.join(names)} is {'larger' if direction == 'maximize' else 'smaller'}-is-better"
    else:
        described = ", ".join(f"{name} ({direction or 'no direction'})" for name, direction in names.items())
        raise DesignError(f"sn=auto: the response {spec.response!r} has no single direction to optimise "
                          f"({described}); {fix}")
    return SweepSpec(spec.design, spec.response, sn, spec.on_failure, spec.overrides,
                     {**spec.settings, "sn_auto": reason})


def read_interval(output_dir: str | Path, response: str) -> tuple[float, float] | None:
    """The evaluation's confidence interval of ``response`` (``<response>_ci_low``, ``<response>_ci_high`` in
    ``output_dir/metrics.json``), or None when the run has none."""
    path = Path(output_dir) / METRICS_FILE
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    try:
        low, high = float(metrics[f"{response}_ci_low"]), float(metrics[f"{response}_ci_high"])
    except (KeyError, TypeError, ValueError):
        return None
    return (low, high) if math.isfinite(low) and math.isfinite(high) else None


def write_design_csv(path: str | Path, spec: SweepSpec) -> Path:
    """``design.csv``: job, row, replicate, seed, each factor's level and level index, and the
    job's full Hydra overrides; written before any job runs."""
    design = spec.design
    names = design.factor_names
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["job", "row", "replicate", "seed", *names, *(f"{n}_level" for n in names), "overrides"])
        for run in design.runs():
            indices = [int(design.array.matrix[run.row, design.columns[n]]) for n in names]
            overrides = " ".join(spec.overrides[run.job]) if spec.overrides else ""
            writer.writerow(
                [run.job, run.row, run.replicate, design.replicate_labels[run.replicate]]
                + [_cell(run.settings[n]) for n in names] + indices + [overrides]
            )
    return path


def _cell(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def write_results_csv(path: str | Path, spec: SweepSpec, results: Sequence[JobResult]) -> Path:
    """``results.csv``: one line per job that has run, with its status, response value, folder and error."""
    design = spec.design
    names = design.factor_names
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["job", "row", "replicate", "seed", *names, "status", spec.response, "output_dir", "error",
                         "ci_low", "ci_high"])
        for result in sorted(results, key=lambda r: r.job):
            settings = design.settings(result.row)
            interval = ["", ""] if result.interval is None else [repr(v) for v in result.interval]
            writer.writerow(
                [result.job, result.row, result.replicate, result.seed]
                + [_cell(settings[n]) for n in names]
                + [result.status, "" if result.value is None else repr(result.value), result.output_dir, result.error]
                + interval
            )
    return path


def read_results_csv(path: str | Path) -> list[JobResult]:
    path = Path(path)
    if not path.is_file():
        raise DesignError(f"{path} does not exist: the sweep has no recorded results")
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    status_at, dir_at = header.index("status"), header.index("output_dir")
    low_at = header.index("ci_low") if "ci_low" in header else None  # results.csv written before intervals: none
    results = []
    for row in rows:
        text = row[status_at + 1]
        interval = None
        if low_at is not None and row[low_at] and row[low_at + 1]:
            interval = (float(row[low_at]), float(row[low_at + 1]))
        results.append(JobResult(
            job=int(row[0]), row=int(row[1]), replicate=int(row[2]), seed=_parse_seed(row[3]),
            status=row[status_at], value=float(text) if text else None, output_dir=row[dir_at],
            error=row[dir_at + 1], interval=interval,
        ))
    return results


def _parse_seed(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        return text


def job_folder(sweep_dir: str | Path, output_dir: str) -> Path:
    """A job folder as recorded in results.csv (relative to the sweep folder when inside it)."""
    path = Path(output_dir)
    return path if path.is_absolute() else Path(sweep_dir) / path


def relative_output_dir(sweep_dir: str | Path, output_dir: str | Path) -> str:
    try:
        return str(Path(output_dir).resolve().relative_to(Path(sweep_dir).resolve()))
    except ValueError:
        return str(Path(output_dir).resolve())


def responses_by_job(results: Sequence[JobResult], n_jobs: int) -> dict[int, float | None]:
    """``{job: value}`` for ``analyze``; jobs that never ran or failed map to None (missing)."""
    values: dict[int, float | None] = {job: None for job in range(n_jobs)}
    for result in results:
        if 0 <= result.job < n_jobs:
            values[result.job] = result.value if result.status == "ok" else None
    return values


def write_response_tables_csv(result: TaguchiResult, path: str | Path) -> Path:
    """Every response table (S/N, mean, std) in long form: characteristic, factor, level index,
    level value, level mean, and the factor's delta and rank."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["table", "characteristic", "factor", "level", "level_value", "level_mean", "delta", "rank"])
        for key, table in result.response_tables.items():
            for factor, means in table.level_means.items():
                for level, mean in enumerate(means):
                    writer.writerow([
                        key, table.characteristic, factor, level, _cell(table.level_values[factor][level]),
                        repr(float(mean)), repr(table.delta[factor]), table.rank[factor],
                    ])
    return path


def write_anova_csv(result: TaguchiResult, path: str | Path) -> Path:
    """The ANOVA table: one line per term (pooled terms flagged, with no F of their own), then the
    error and the total."""
    anova = result.anova
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "df", "ss", "ms", "f", "p", "pure_ss", "percent_contribution", "pooled"])
        for row in anova.rows:
            writer.writerow([
                row.term, row.df, repr(row.sum_of_squares), repr(row.mean_square), _float(row.f_value),
                _float(row.p_value), _float(row.pure_sum_of_squares), _float(row.percent_contribution), row.pooled,
            ])
        writer.writerow([
            "error", anova.error_df, repr(anova.error_sum_of_squares), _float(anova.error_mean_square), "", "",
            _float(anova.error_pure_sum_of_squares), _float(anova.error_percent_contribution), "",
        ])
        writer.writerow(["total", anova.total_df, repr(anova.total_sum_of_squares), "", "", "", "", "100.0", ""])
    return path


def _float(value: float) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


@dataclass(frozen=True)
class Confirmation:
    """Confirmation runs at the predicted optimum: their responses, the analysed quantity they give
    (one S/N over all of them, or their mean for a raw analysis) and whether it falls inside the
    confirmation interval of the prediction."""

    settings: dict[str, Any]
    results: tuple[JobResult, ...]
    observed: float
    predicted: float
    half_width: float

    @property
    def within_interval(self) -> bool:
        return not math.isnan(self.half_width) and abs(self.observed - self.predicted) <= self.half_width


def confirm(result: TaguchiResult, settings: Mapping[str, Any], results: Sequence[JobResult]) -> Confirmation | None:
    """Compare confirmation results (run at ``settings``) with the prediction; None if too few of them
    succeeded or they ran at other levels than this analysis's best (e.g. re-analysed with another S/N)."""
    values = np.array([r.value for r in results if r.status == "ok"], dtype=np.float64)
    if len(values) < MIN_REPLICATES[result.sn_type] or dict(settings) != dict(result.best_levels):
        return None
    if result.anova_on == "sn":
        observed, n_results = signal_to_noise(values, result.sn_type), 1
    else:
        observed, n_results = float(values.mean()), len(values)
    prediction = result.prediction
    return Confirmation(
        settings=dict(settings),
        results=tuple(results),
        observed=float(observed),
        predicted=prediction.value,
        half_width=prediction.confirmation_half_width(n_results),
    )


def write_confirmation_csv(
    path: str | Path, spec: SweepSpec, settings: Mapping[str, Any], results: Sequence[JobResult]
) -> Path:
    """``confirmation.csv``: the confirmation jobs at ``settings`` (the predicted optimum)."""
    names = spec.design.factor_names
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["job", "seed", *names, "status", spec.response, "output_dir", "error"])
        for result in results:
            writer.writerow(
                [result.job, result.seed, *(json.dumps(settings[n]) for n in names), result.status,
                 "" if result.value is None else repr(result.value), result.output_dir, result.error]
            )
    return path


def read_confirmation_csv(path: str | Path, spec: SweepSpec) -> tuple[dict[str, Any], list[JobResult]]:
    """(settings, results) of ``confirmation.csv``; empty if the sweep ran no confirmation."""
    path = Path(path)
    if not path.is_file():
        return {}, []
    names = spec.design.factor_names
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return {}, []
    settings = {n: json.loads(rows[0][n]) for n in names}
    results = [
        JobResult(int(r["job"]), -1, i, _parse_seed(r["seed"]), r["status"],
                  float(r[spec.response]) if r[spec.response] else None, r["output_dir"], r["error"])
        for i, r in enumerate(rows)
    ]
    return settings, results


def confirmation_markdown(
    confirmation: Confirmation | None, settings: Mapping[str, Any], results: Sequence[JobResult], quantity: str
) -> str:
    if not results:
        return ""
    lines = ["## Confirmation\n"]
    described = ", ".join(f"{k} = {v}" for k, v in settings.items())
    table = ["| job | seed | status | response |", "|---|---|---|---|"]
    table += [
        f"| {r.job} | {r.seed} | {r.status} | {'' if r.value is None else f'{r.value:.6g}'} |" for r in results
    ]
    if confirmation is None:
        lines.append(
            f"{len(results)} run(s) at {described}: too few succeeded, or these are not the best levels of "
            "this analysis, so there is no comparison with its prediction.\n"
        )
    else:
        verdict = (
            "inside the interval: the additive model predicts this optimum"
            if confirmation.within_interval else
            "outside the interval: interactions or noise the design did not capture; do not trust the ranking"
        )
        if math.isnan(confirmation.half_width):
            verdict = "no interval to compare with (no error degrees of freedom)"
        lines.append(
            f"{len(results)} run(s) at the best levels ({described}). Observed {quantity}: "
            f"**{confirmation.observed:.4g}**, predicted {confirmation.predicted:.4g} "
            f"± {confirmation.half_width:.4g}: {verdict}.\n"
        )
    lines.append("\n".join(table) + "\n")
    return "\n".join(lines)


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "factor"


def interaction_plot_name(pair: tuple[str, str]) -> str:
    return f"interaction_{_file_name(pair[0])}_x_{_file_name(pair[1])}.png"


def sweep_markdown(spec: SweepSpec, results: Sequence[JobResult]) -> str:
    """How the sweep was run: response key, factors as overrides, and every failed job."""
    lines = [
        "## Sweep\n",
        f"Response: `{spec.response}` from each job's {METRICS_FILE}; S/N {spec.sn}"
        f"{' (' + spec.settings['sn_auto'] + ')' if 'sn_auto' in spec.settings else ''}; "
        f"on_failure={spec.on_failure}. {len(results)} of {spec.design.n_jobs} jobs ran.\n",
    ]
    failed = [r for r in results if r.status != "ok"]
    if failed:
        lines.append("Failed jobs (kept in the analysis as missing, never dropped silently):\n")
        lines += [f"- job {r.job} (row {r.row}, seed {r.seed}): {r.status}: {r.error}" for r in failed]
        lines.append("")
    return "\n".join(lines)


def analyze_sweep(spec: SweepSpec, results: Sequence[JobResult]) -> TaguchiResult:
    """``analyze`` on the recorded results, missing jobs handled by the sweep's on_failure policy."""
    if spec.on_failure not in MISSING_POLICY_OF:
        raise DesignError(f"on_failure={spec.on_failure!r}; choose one of {list(MISSING_POLICY_OF)}")
    missing = MISSING_POLICY_OF[spec.on_failure]
    return analyze(spec.design, responses_by_job(results, spec.design.n_jobs), spec.sn, missing=missing)


def write_analysis(
    out_dir: str | Path,
    spec: SweepSpec,
    results: Sequence[JobResult],
    confirmation_settings: Mapping[str, Any] | None = None,
    confirmation_results: Sequence[JobResult] = (),
    tensorboard: bool = True,
    sweep_dir: str | Path | None = None,
) -> tuple[TaguchiResult, list[Path]]:
    """Analyse and write ``analysis.md``, the response-table and ANOVA CSVs, ``main_effects.png``,
    one interaction plot per assigned interaction and (optionally) the same in TensorBoard. ``sn=auto`` is
    resolved from the job folders of ``sweep_dir`` (default ``out_dir``)."""
    out_dir = Path(out_dir)
    spec = resolve_sn(spec, results, out_dir if sweep_dir is None else sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = analyze_sweep(spec, results)
    settings = confirmation_settings or {}
    confirmation = confirm(result, settings, confirmation_results) if confirmation_results else None
    intervals = {r.job: r.interval for r in results if r.status == "ok" and r.interval is not None}
    noise = noise_report(spec.design, result.responses, intervals, result.alpha)
    markdown = "\n".join(
        part for part in (
            analysis_markdown(result),
            noise_markdown(noise, spec.design),
            sweep_markdown(spec, results),
            confirmation_markdown(confirmation, settings, confirmation_results, result.quantity),
        ) if part
    )
    written = [out_dir / ANALYSIS_FILE]
    written[0].write_text(markdown)
    written.append(write_response_tables_csv(result, out_dir / RESPONSE_TABLES_FILE))
    written.append(write_anova_csv(result, out_dir / ANOVA_FILE))
    figures = {"main_effects": plot_main_effects(result, out_dir / MAIN_EFFECTS_FILE)}
    for name, effect in result.interactions.items():
        figures[f"interaction {name}"] = plot_interaction(result, effect.pair, out_dir / interaction_plot_name(effect.pair))
    written += list(figures.values())
    if tensorboard:
        written.append(write_tensorboard(out_dir / TENSORBOARD_DIR, result, markdown, figures, results))
    return result, written


def write_tensorboard(
    log_dir: Path, result: TaguchiResult, markdown: str, figures: Mapping[str, Path], results: Sequence[JobResult]
) -> Path:
    """The analysis as TensorBoard text, the plots as images and each job's response and each row's
    S/N as scalars (step = job or row number)."""
    from matplotlib.image import imread
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        writer.add_text("taguchi/analysis", markdown, 0)
        for name, path in figures.items():
            image = imread(str(path))[..., :3]
            writer.add_image(f"taguchi/{name}", image, 0, dataformats="HWC")
        for job in results:
            if job.value is not None:
                writer.add_scalar("taguchi/response", job.value, job.job)
        for row, value in enumerate(result.sn):
            writer.add_scalar("taguchi/sn", float(value), row)
    finally:
        writer.close()
    return log_dir
