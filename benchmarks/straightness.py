"""Straightness of probability-flow ODE trajectories (issue 17, item 5) across the gaussian, equalized, banded and
flow processes and before/after reflow, with intervals over training seeds.

For each process and seed: an ``sd-train noise=<process> seed=<seed>`` run of ``--steps`` steps (its in-training
spectral evaluation off, its final evaluation trimmed to ``--eval-samples`` images without the battery), then the
straightness of its checkpoint measured by the project's code (``evaluation.straightness.model_straightness``:
``--trajectories`` deterministic DDIM η = 0 trajectories of ``--ode-steps`` steps, trajectory i from generator
``--measure-seed`` + i in every cell, ``--bootstrap`` resamples behind each run's 95 % interval, and the per-step
deviation 1 − cos θ from the chord against t). For each of ``--reflow-processes`` the same measurement on the
student of ``sd-distill method=reflow`` from each seed's checkpoint (``--reflow-steps`` steps, ``--num-pairs`` pairs
drawn with ``--pair-steps`` DDIM steps). Per cell (process, before/after reflow): the mean over seeds with its
Student-t 95 % interval, each seed's bootstrap interval, and permutation tests (``evaluation.compare``, as
``sd-compare``) of each process against gaussian and of each reflowed student against its teachers (paired by seed).

Everything lands in ``--out``: runs/ (the Hydra runs and their logs), results.csv (one row per measured
(process, stage, seed); resumable: a measured cell is skipped, a finished run is not trained again, an interrupted
one resumes from its last.ckpt), straightness.md and straightness.png.

    python benchmarks/straightness.py --out benchmarks/results/straightness              # the full study
    python benchmarks/straightness.py --steps 300 --seeds 0 1 --reflow-steps 100 --num-pairs 512 --out ...  # reduced
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from cli_runs import resumable_run
from results_csv import append_result, read_results

from spectral_diffusion.evaluation.compare import permutation_p_value, t_interval
from spectral_diffusion.evaluation.straightness import model_straightness
from spectral_diffusion.pipeline import load_module

PROCESSES = ["gaussian", "equalized", "banded", "flow"]
STAGES = ["teacher", "reflow"]  # before / after reflow
STAGE_NAMES = {"teacher": "before reflow", "reflow": "after reflow"}
LEVEL = 0.95
COLUMNS = ["process", "stage", "seed", "straightness", "straightness_ci_low", "straightness_ci_high",
           "deviation_peak", "deviation_peak_t", "t", "deviation", "trajectories", "ode_steps", "measure_seed",
           "bootstrap", "train_steps", "run_cpu_minutes", "objective_name", "objective", "measure_seconds",
           "checkpoint"]
# The in-training spectral evaluation and the final evaluation's battery cost time and say nothing about
# straightness; the final FID on --eval-samples images stays as a check that the model generates.
TRIM = ["trainer.enable_progress_bar=false", "~callbacks.spectral_eval", "evaluation.battery=false",
        "evaluation.timestep_bins=0"]


def positive(flag: str, value: int, parser: argparse.ArgumentParser) -> None:
    if value <= 0:
        parser.error(f"{flag} must be a positive integer, got {value}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/straightness"))
    parser.add_argument("--processes", nargs="+", default=PROCESSES, choices=PROCESSES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sd-train (and sd-distill) seeds")
    parser.add_argument("--steps", type=int, default=6000, help="sd-train trainer.max_steps")
    parser.add_argument("--reflow-processes", nargs="*", choices=PROCESSES, default=None,
                        help="processes whose checkpoints are reflowed (default: flow and gaussian, those of "
                             "--processes; none given: no reflow)")
    parser.add_argument("--reflow-steps", type=int, default=2000, help="sd-distill trainer.max_steps")
    parser.add_argument("--num-pairs", type=int, default=4096, help="reflow pairs")
    parser.add_argument("--pair-steps", type=int, default=50, help="DDIM steps that draw each reflow pair")
    parser.add_argument("--trajectories", type=int, default=256, help="trajectories measured per checkpoint")
    parser.add_argument("--ode-steps", type=int, default=20, help="DDIM (eta 0) steps of each trajectory")
    parser.add_argument("--measure-seed", type=int, default=0, help="trajectory i starts from generator seed + i")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples behind each run's interval")
    parser.add_argument("--eval-samples", type=int, default=200, help="images of each run's final evaluation")
    parser.add_argument("--override", nargs="*", default=[], help="extra sd-train overrides")
    parser.add_argument("--distill-override", nargs="*", default=[], help="extra sd-distill overrides")
    args = parser.parse_args(argv)
    for flag in ("steps", "reflow_steps", "num_pairs", "pair_steps", "trajectories", "ode_steps", "bootstrap",
                 "eval_samples"):
        positive("--" + flag.replace("_", "-"), getattr(args, flag), parser)
    if args.bootstrap < 10:
        parser.error(f"--bootstrap must be at least 10, got {args.bootstrap}")
    if any(seed < 0 for seed in [*args.seeds, args.measure_seed]):
        parser.error(f"--seeds and --measure-seed must be >= 0, got {args.seeds} and {args.measure_seed}")
    args.processes = list(dict.fromkeys(args.processes))
    args.seeds = list(dict.fromkeys(args.seeds))
    if args.reflow_processes is None:
        args.reflow_processes = [p for p in ("flow", "gaussian") if p in args.processes]
    missing = [p for p in args.reflow_processes if p not in args.processes]
    if missing:
        parser.error(f"--reflow-processes {' '.join(missing)}: not in --processes (their teachers are not trained)")
    args.reflow_processes = list(dict.fromkeys(args.reflow_processes))
    return args


# --- runs and measurements ------------------------------------------------------------------------------------
def evaluation_overrides(args) -> list[str]:
    return [f"evaluation.num_samples={args.eval_samples}", f"evaluation.kid_subset_size={min(100, args.eval_samples)}",
            f"evaluation.grid_size={min(64, args.eval_samples)}"]


def warmup(steps: int, default: int = 200) -> int:
    """Warm-up steps: the config's default (sd-train 200, sd-distill 100), a tenth of shorter runs."""
    return max(1, min(default, steps // 10))


def train_run(process: str, seed: int, args, runs: Path, costs: dict) -> Path:
    """The ``sd-train noise=<process> seed=<seed>`` run (reused when finished, resumed when interrupted)."""
    name = f"{process}_seed{seed}"
    overrides = [f"noise={process}", f"seed={seed}", f"trainer.max_steps={args.steps}",
                 f"scheduler.warmup_steps={warmup(args.steps)}", f"paths.summary_csv={runs / 'summary.csv'}", *TRIM,
                 *evaluation_overrides(args), *args.override]
    cost = resumable_run("train", runs / name, overrides, runs / f"{name}.log")
    if cost is not None:
        costs[name] = costs.get(name, 0.0) + cost
    return runs / name


def reflow_run(process: str, seed: int, teacher: Path, args, runs: Path, costs: dict) -> Path:
    """``sd-distill method=reflow`` from the seed's checkpoint (reused when finished, resumed when interrupted)."""
    name = f"{process}_seed{seed}_reflow"
    overrides = [f"teacher_ckpt={teacher}", f"seed={seed}", "method=reflow", f"method.num_pairs={args.num_pairs}",
                 f"method.sampler.steps={args.pair_steps}", f"trainer.max_steps={args.reflow_steps}",
                 f"scheduler.warmup_steps={warmup(args.reflow_steps, 100)}",
                 f"paths.summary_csv={runs / 'summary.csv'}", *TRIM, *evaluation_overrides(args),
                 *args.distill_override]
    cost = resumable_run("distill", runs / name, overrides, runs / f"{name}.log")
    if cost is not None:
        costs[name] = costs.get(name, 0.0) + cost
    return runs / name


def measure(checkpoint: Path, args) -> dict:
    """The straightness columns of one checkpoint: the same trajectories (count, steps, seeds) for every cell."""
    module = load_module(checkpoint)
    started = time.perf_counter()
    metrics, _ = model_straightness(module, samples=args.trajectories, steps=args.ode_steps, seed=args.measure_seed,
                                    batch_size=min(256, args.trajectories), resamples=args.bootstrap, level=LEVEL)
    return {"straightness": metrics["straightness"], "straightness_ci_low": metrics["straightness_ci_low"],
            "straightness_ci_high": metrics["straightness_ci_high"],
            "deviation_peak": metrics["straightness_deviation_peak"],
            "deviation_peak_t": metrics["straightness_deviation_peak_t"],
            "t": json.dumps(metrics["straightness_by_t"]["t"]),
            "deviation": json.dumps(metrics["straightness_by_t"]["deviation"]),
            "trajectories": args.trajectories, "ode_steps": args.ode_steps, "measure_seed": args.measure_seed,
            "bootstrap": args.bootstrap, "measure_seconds": time.perf_counter() - started,
            "checkpoint": str(checkpoint)}


# --- aggregation over seeds -----------------------------------------------------------------------------------
def aggregate(rows: list[dict], level: float = LEVEL) -> list[dict]:
    """One summary per (process, stage) present in ``rows``, in PROCESSES × STAGES order: the seeds (sorted), their
    values and bootstrap intervals, the mean with its Student-t interval over seeds (NaN for one seed), the standard
    deviation, and the mean per-step deviation profile over seeds with its t grid."""
    summaries = []
    for process in PROCESSES:
        for stage in STAGES:
            cell = sorted((row for row in rows if row["process"] == process and row["stage"] == stage),
                          key=lambda row: int(row["seed"]))
            if not cell:
                continue
            values = np.array([float(row["straightness"]) for row in cell])
            low, high = t_interval(values, level)
            times = [json.loads(row["t"]) for row in cell]
            if any(not np.allclose(grid, times[0]) for grid in times):
                raise ValueError(f"{process}/{stage}: the seeds' trajectories walk different time grids")
            summaries.append({
                "process": process, "stage": stage, "n": len(values), "seeds": [int(row["seed"]) for row in cell],
                "values": values, "mean": float(values.mean()),
                "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan, "ci_low": low, "ci_high": high,
                "seed_intervals": [(float(row["straightness_ci_low"]), float(row["straightness_ci_high"]))
                                   for row in cell],
                "t": np.array(times[0]), "deviation": np.mean([json.loads(row["deviation"]) for row in cell], axis=0),
                "peak": float(np.mean([float(row["deviation_peak"]) for row in cell]))})
    return summaries


def smallest_p(first: int, second: int, paired: bool) -> float:
    """The smallest two-sided p-value an exact permutation test of these group sizes can give (untied data)."""
    if paired:
        return 2.0 ** (1 - first)
    return (2 if first == second else 1) / math.comb(first + second, first)


def comparisons(summaries: list[dict]) -> list[dict]:
    """Each process against gaussian before reflow (unpaired), and each process after reflow against before
    (paired by seed, on the seeds both have): the difference of means, the permutation p-value and its floor; only
    where both sides have at least two seeds."""
    by_cell = {(s["process"], s["stage"]): s for s in summaries}
    found = []
    base = by_cell.get(("gaussian", "teacher"))
    for process in PROCESSES:
        other = by_cell.get((process, "teacher"))
        if base is None or other is None or process == "gaussian" or min(base["n"], other["n"]) < 2:
            continue  # one seed on a side: no test (its permutation p is 1 whatever the values)
        found.append({"a": f"{process}, before reflow", "b": "gaussian, before reflow",
                      "difference": other["mean"] - base["mean"], "paired": False,
                      "p": permutation_p_value(other["values"], base["values"]),
                      "p_floor": smallest_p(other["n"], base["n"], False),
                      "overlap": not (other["ci_high"] < base["ci_low"] or base["ci_high"] < other["ci_low"])})
    for process in PROCESSES:
        before, after = by_cell.get((process, "teacher")), by_cell.get((process, "reflow"))
        if before is None or after is None:
            continue
        seeds = sorted(set(before["seeds"]) & set(after["seeds"]))
        if len(seeds) < 2:
            continue
        a = np.array([after["values"][after["seeds"].index(s)] for s in seeds])
        b = np.array([before["values"][before["seeds"].index(s)] for s in seeds])
        low, high = t_interval(a - b, LEVEL)
        found.append({"a": f"{process}, after reflow", "b": f"{process}, before reflow",
                      "difference": float((a - b).mean()), "paired": True, "p": permutation_p_value(a, b, paired=True),
                      "p_floor": smallest_p(len(seeds), len(seeds), True), "difference_ci": (low, high)})
    return found


# --- outputs ----------------------------------------------------------------------------------------------------
def fmt(value: float) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4g}"


def bracket(value: float, low: float, high: float) -> str:
    if math.isnan(low):
        return fmt(value)
    return f"{fmt(value)} [{fmt(low)}, {fmt(high)}]"


def write_table(rows: list[dict], path: Path) -> None:
    summaries = aggregate(rows)
    by_cell = {(s["process"], s["stage"]): s for s in summaries}
    lines = ["| process | before reflow: mean [95% t interval over seeds] | after reflow | seeds |",
             "|---|---:|---:|---:|"]
    for process in PROCESSES:
        cells = [by_cell.get((process, stage)) for stage in STAGES]
        if cells[0] is None and cells[1] is None:
            continue
        text = [bracket(c["mean"], c["ci_low"], c["ci_high"]) if c else "–" for c in cells]
        n = "/".join(str(c["n"]) if c else "0" for c in cells)
        lines.append(f"| {process} | {text[0]} | {text[1]} | {n} |")
    lines += ["", "Each seed (its own 95% bootstrap interval over the trajectories), the largest mean per-step "
              "deviation 1 − cos θ from the chord and the t where it lies, the CPU minutes of its sd-train or "
              "sd-distill run (training and its final evaluation) and the run's final objective:", "",
              "| process | stage | seed | straightness [bootstrap] | peak deviation | at t | run CPU min | objective |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for summary in summaries:
        for row in sorted((r for r in rows if r["process"] == summary["process"] and r["stage"] == summary["stage"]),
                          key=lambda r: int(r["seed"])):
            cost = f"{float(row['run_cpu_minutes']):.1f}" if row.get("run_cpu_minutes") else "–"
            objective = f"{row['objective_name']} {float(row['objective']):.3g}" if row.get("objective") else "–"
            value = bracket(*(float(row[key]) for key in ("straightness", "straightness_ci_low",
                                                            "straightness_ci_high")))
            lines.append(f"| {row['process']} | {STAGE_NAMES[row['stage']]} | {row['seed']} | {value} | "
                         f"{float(row['deviation_peak']):.3f} | {float(row['deviation_peak_t']):.3f} | {cost} | "
                         f"{objective} |")
    found = comparisons(summaries)
    if found:
        lines += ["", "Differences of means, two-sided exact permutation tests "
                  "(`evaluation.compare.permutation_p_value`, as `sd-compare`); with few seeds the smallest attainable "
                  "p is large, given as 'p floor':", "",
                  "| A | B | mean A − B | p | p floor | paired by seed |", "|---|---|---:|---:|---:|---|"]
        for item in found:
            extra = ""
            if item["paired"] and not math.isnan(item["difference_ci"][0]):
                extra = f" (95% t interval of the paired differences [{fmt(item['difference_ci'][0])}, " \
                        f"{fmt(item['difference_ci'][1])}])"
            elif not item["paired"]:
                extra = " (t intervals overlap)" if item["overlap"] else " (t intervals disjoint)"
            lines.append(f"| {item['a']} | {item['b']} | {item['difference']:+.4g}{extra} | {item['p']:.3f} | "
                         f"{item['p_floor']:.3f} | {'yes' if item['paired'] else 'no'} |")
    if rows:
        first = rows[0]
        lines += ["", "straightness = E[L² − ‖x0 − x_T‖²] / E‖x0 − x_T‖² (0: straight), from "
                  f"{first['trajectories']} deterministic DDIM (η = 0) trajectories of {first['ode_steps']} steps "
                  "per checkpoint, trajectory i "
                  f"from generator {first['measure_seed']} + i in every cell; {first['bootstrap']} bootstrap resamples "
                  f"per seed; intervals over seeds are Student t (n − 1 degrees of freedom), '–' for one seed."]
    path.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summaries = aggregate(rows)
    processes = [p for p in PROCESSES if any(s["process"] == p for s in summaries)]
    colours = {p: f"C{i}" for i, p in enumerate(PROCESSES)}
    figure, (bars, profiles) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.38
    for j, stage in enumerate(STAGES):
        for i, process in enumerate(processes):
            summary = next((s for s in summaries if s["process"] == process and s["stage"] == stage), None)
            if summary is None:
                continue
            x = i + (j - 0.5) * width
            error = None
            if not math.isnan(summary["ci_low"]):
                error = [[summary["mean"] - summary["ci_low"]], [summary["ci_high"] - summary["mean"]]]
            bars.bar(x, summary["mean"], width, yerr=error, capsize=4, color=colours[process],
                     alpha=1.0 if stage == "teacher" else 0.5, hatch=None if stage == "teacher" else "//",
                     edgecolor="black", linewidth=0.5)
            bars.scatter(np.full(summary["n"], x), summary["values"], color="black", s=10, zorder=3)
            style = "-" if stage == "teacher" else "--"
            profiles.plot(summary["t"], summary["deviation"], style, marker="o", markersize=3,
                          color=colours[process], label=f"{process}, {STAGE_NAMES[stage]}")
    bars.set_xticks(range(len(processes)), processes)
    bars.set_ylabel("straightness (mean over seeds, 95% t interval)")
    bars.set_title("solid: before reflow, hatched: after; dots: seeds", fontsize=9)
    profiles.set_xlabel("t at the start of the step")
    profiles.set_ylabel("mean deviation 1 − cos(step, chord)")
    if all(float(v) > 0 for s in summaries for v in s["deviation"]):
        profiles.set_yscale("log")
    profiles.invert_xaxis()  # sampling runs from t = 1 to 0
    profiles.legend(fontsize=7)
    profiles.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def check_settings(rows: list[dict], args, path: Path) -> None:
    """A resumed study must measure as it did before: rows of other settings in ``path`` stop it (SystemExit)."""
    for row in rows:
        wanted = {"trajectories": args.trajectories, "ode_steps": args.ode_steps, "measure_seed": args.measure_seed,
                  "bootstrap": args.bootstrap,
                  "train_steps": args.steps if row["stage"] == "teacher" else args.reflow_steps}
        changed = [f"{key} {row[key]} (now {value})" for key, value in wanted.items() if int(row[key]) != value]
        if changed:
            raise SystemExit(f"{path} holds {row['process']}/{row['stage']}/seed {row['seed']} measured with "
                             f"{', '.join(changed)}: use another --out, or the settings it was made with")


# --- the study --------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = args.out
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    costs_path = out / "costs.json"
    costs = json.loads(costs_path.read_text()) if costs_path.is_file() else {}
    results_path = out / "results.csv"
    check_settings(read_results(results_path), args, results_path)
    done = {(row["process"], row["stage"], int(row["seed"])) for row in read_results(results_path)}

    def record(process: str, stage: str, seed: int, folder: Path, checkpoint: Path, steps: int) -> None:
        costs_path.write_text(json.dumps(costs, indent=2))
        metrics = json.loads((folder / "metrics.json").read_text())
        row = {"process": process, "stage": stage, "seed": seed, "train_steps": steps,
               "run_cpu_minutes": costs.get(folder.name, ""), "objective_name": metrics.get("objective_name", ""),
               "objective": metrics.get("objective", ""), **measure(checkpoint, args)}
        append_result(results_path, row, COLUMNS)
        done.add((process, stage, seed))
        print(f"{process:>10} {STAGE_NAMES[stage]:>13} seed {seed}: straightness "
              f"{bracket(row['straightness'], row['straightness_ci_low'], row['straightness_ci_high'])}", flush=True)

    for process in args.processes:
        for seed in args.seeds:
            wanted = [stage for stage in STAGES if (process, stage, seed) not in done
                      and (stage == "teacher" or process in args.reflow_processes)]
            if not wanted:
                continue
            folder = train_run(process, seed, args, runs, costs)
            teacher = folder / "checkpoints" / "last.ckpt"
            if "teacher" in wanted:
                record(process, "teacher", seed, folder, teacher, args.steps)
            if "reflow" in wanted:
                student = reflow_run(process, seed, teacher, args, runs, costs)
                record(process, "reflow", seed, student, student / "checkpoints" / "student.ckpt", args.reflow_steps)
    costs_path.write_text(json.dumps(costs, indent=2))

    rows = [row for row in read_results(results_path)
            if row["process"] in args.processes and int(row["seed"]) in args.seeds]
    write_table(rows, out / "straightness.md")
    plot(rows, out / "straightness.png")
    print((out / "straightness.md").read_text())
    return 0


def cli(argv: list[str] | None = None) -> int:
    """``main`` with a failed sd-train / sd-distill run reported as one message (its log's end) instead of a trace."""
    try:
        return main(argv)
    except RuntimeError as error:
        print(f"straightness: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(cli())
