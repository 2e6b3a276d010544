"""FID against network evaluations (NFE = 1, 2, 4, 8) for reflow, progressive and consistency distillation, next to
DDIM and DPM-Solver++ at the same NFE and the teacher at 50 DDIM steps, with each method's training cost.

Trains the default MNIST model with ``sd-train`` (or takes ``--teacher``), runs ``sd-distill`` once per method
(progressive from 2·max(NFE) teacher steps down to min(NFE), exporting a student per round; reflow and
consistency evaluated at every NFE from one student), then draws ``--num-samples`` images per cell with fixed seeds
and evaluates them with ``evaluation.evaluate_images`` (the same FID, bootstrap interval ``<key>_ci_low/_ci_high``
and extractor as ``sd-train``). Everything lands in ``--out``: runs/ (the Hydra runs), results.csv (resumable:
finished cells and finished runs are skipped, an interrupted distillation resumes from its last.ckpt),
results.md and fid_vs_nfe.png.

    python benchmarks/few_step.py --out benchmarks/results/few_step                    # the full study
    python benchmarks/few_step.py --teacher outputs/.../checkpoints/last.ckpt --out ...  # an existing teacher
    python benchmarks/few_step.py --teacher-steps 600 --distill-steps 300 --num-samples 200 --out ...  # reduced
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from pathlib import Path

from cli_runs import resumable_run
from omegaconf import OmegaConf
from results_csv import append_result, read_results

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.diffusion.guidance import instantiate_sampler
from spectral_diffusion.diffusion.samplers import validate_sampler
from spectral_diffusion.evaluation import (
    EvaluationConfig,
    build_extractor,
    choose_features,
    evaluate_images,
    metric_shorthands,
    timed_generate,
)
from spectral_diffusion.pipeline import instantiate_checked, load_module

METHODS = ["reflow", "progressive", "consistency"]
BASELINES = ["ddim", "dpm_solver_pp"]
COLUMNS = ["method", "nfe", "fid", "fid_ci_low", "fid_ci_high", "kid", "sample_seconds_per_image", "num_samples",
           "fid_key", "checkpoint", "train_cpu_minutes", "note"]
TEACHER_STEPS = 50


def train_teacher(args, runs: Path, costs: dict) -> Path:
    """The default MNIST ``sd-train`` run (``--teacher-steps`` steps), reused when it finished before."""
    folder = runs / "teacher"
    overrides = [f"paths.summary_csv={runs / 'summary.csv'}", "trainer.enable_progress_bar=false",
                 f"trainer.max_steps={args.teacher_steps}", *args.teacher_override]
    cost = resumable_run("train", folder, overrides, runs / "teacher.log")
    if cost is not None:
        costs["teacher"] = costs.get("teacher", 0.0) + cost
    return folder / "checkpoints" / "last.ckpt"


def method_overrides(method: str, nfe: list[int], args) -> list[str]:
    if method == "reflow":
        return ["method=reflow", f"method.num_pairs={args.num_pairs}", f"method.rounds={args.reflow_rounds}",
                f"method.sampler.steps={args.pair_steps}", f"method.student_steps={min(nfe)}"]
    if method == "progressive":
        return ["method=progressive", f"method.teacher_steps={2 * max(nfe)}", f"method.student_steps={min(nfe)}"]
    return ["method=consistency", f"method.student_steps={min(nfe)}"]


def distil(method: str, teacher: Path, args, runs: Path, costs: dict) -> Path:
    """One ``sd-distill`` run of ``method`` (resumed from its last.ckpt if it was interrupted); its folder."""
    folder = runs / method
    overrides = [f"teacher_ckpt={teacher}", f"paths.summary_csv={runs / 'summary.csv'}",
                 "trainer.enable_progress_bar=false", f"trainer.max_steps={args.distill_steps}",
                 f"scheduler.warmup_steps={max(1, min(100, args.distill_steps // 10))}",
                 f"evaluation.num_samples={args.num_samples}", *method_overrides(method, args.nfe, args),
                 *args.distill_override]
    cost = resumable_run("distill", folder, overrides, runs / f"{method}.log")
    if cost is not None:
        costs[method] = costs.get(method, 0.0) + cost
    return folder


def student_for(method: str, folder: Path, nfe: int, args) -> Path:
    """The student checkpoint that samples with ``nfe`` evaluations: progressive's round with that many steps."""
    if method != "progressive":
        return folder / "checkpoints" / "student.ckpt"
    teacher_steps = 2 * max(args.nfe)
    round_index = int(math.log2(teacher_steps // nfe)) - 1
    return folder / "checkpoints" / f"student_round{round_index}.ckpt"


def with_steps(sampler, steps: int):
    """The module's own sampler at another step count."""
    return functools.partial(sampler.func, **{**sampler.keywords, "steps": steps})


def baseline_sampler(name: str, steps: int, process):
    node = OmegaConf.load(CONFIG_DIR / "sampler" / f"{name}.yaml")
    node.steps = steps
    if name == "dpm_solver_pp":
        node.order = min(2, steps)  # 2M needs two steps; at one step it is first order (= DDIM)
    sampler = instantiate_sampler(node)
    validate_sampler(sampler, process)
    return sampler


class Evaluator:
    """The teacher's datamodule and feature extractor, and ``sd-train``'s evaluation at ``--num-samples``."""

    def __init__(self, teacher_module, args, out: Path) -> None:
        config = OmegaConf.create(teacher_module.config)
        self.datamodule = instantiate_checked(config.data)
        self.datamodule.setup()
        features = choose_features(instantiate_checked(config.features), self.datamodule)
        self.extractor = build_extractor(features, self.datamodule)
        self.keys = metric_shorthands(features.name, args.num_samples)
        self.evaluation = EvaluationConfig.from_config({
            "num_samples": args.num_samples, "batch_size": 500, "kid_subset_size": min(100, args.num_samples),
            "seed": 1234, "grid_size": 64, "battery": False, "bootstrap": args.bootstrap, "level": 0.95,
            "timestep_bins": 0, "battery_options": {}})
        self.out = out

    def __call__(self, module, sampler, name: str) -> dict:
        samples, runtime = timed_generate(module, self.evaluation.num_samples, sampler=sampler,
                                          seed=self.evaluation.seed, batch_size=self.evaluation.batch_size)
        metrics = evaluate_images(samples, self.datamodule, self.extractor, self.evaluation, self.out / "cells" / name,
                                  metrics=runtime)
        fid = self.keys["fid"]
        return {"fid": metrics[fid], "fid_ci_low": metrics.get(f"{fid}_ci_low", ""),
                "fid_ci_high": metrics.get(f"{fid}_ci_high", ""), "kid": metrics.get(self.keys["kid"], ""),
                "sample_seconds_per_image": runtime["sample_seconds_per_image"], "fid_key": fid,
                "num_samples": self.evaluation.num_samples}


def interval(row: dict) -> str:
    if row.get("fid_ci_low") in ("", None):
        return f"{float(row['fid']):.2f}"
    return f"{float(row['fid']):.2f} [{float(row['fid_ci_low']):.2f}, {float(row['fid_ci_high']):.2f}]"


def write_table(rows: list[dict], nfe: list[int], path: Path) -> None:
    names = [*METHODS, *BASELINES]
    lines = ["| method | " + " | ".join(f"NFE {n}" for n in nfe) + " | training CPU min |",
             "|---|" + "---:|" * (len(nfe) + 1)]
    for name in names:
        cells = {int(row["nfe"]): row for row in rows if row["method"] == name}
        if not cells:
            continue
        cost = next((float(row["train_cpu_minutes"]) for row in cells.values() if row.get("train_cpu_minutes")), None)
        fids = " | ".join(interval(cells[n]) if n in cells else "–" for n in nfe)
        lines.append(f"| {name} | {fids} | {'–' if cost is None else f'{cost:.2f}'} |")
    teacher = [row for row in rows if row["method"] == "teacher"]
    if teacher:
        cost = teacher[0].get("train_cpu_minutes") or ""
        lines.append(f"\nTeacher, DDIM {TEACHER_STEPS} steps: FID {interval(teacher[0])}"
                     + (f"; sd-train run {float(cost):.1f} CPU minutes (training and its evaluation)." if cost else "."))
    if rows:
        lines.append(f"\nFID key {rows[0]['fid_key']} ({rows[0]['num_samples']} samples, the same seeds in every "
                     "cell), 95% bootstrap interval in brackets. Distillation cost: CPU minutes of Trainer.fit "
                     "(pair generation included), from each run's metrics.json.")
    path.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for name in [*METHODS, *BASELINES]:
        cells = sorted((int(row["nfe"]), row) for row in rows if row["method"] == name)
        if not cells:
            continue
        x = [n for n, _ in cells]
        y = [float(row["fid"]) for _, row in cells]
        low = [float(row["fid"]) - float(row["fid_ci_low"] or row["fid"]) for _, row in cells]
        high = [float(row["fid_ci_high"] or row["fid"]) - float(row["fid"]) for _, row in cells]
        axis.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=name,
                      linestyle="--" if name in BASELINES else "-")
    teacher = [row for row in rows if row["method"] == "teacher"]
    if teacher:
        axis.axhline(float(teacher[0]["fid"]), color="black", linewidth=1, label=f"teacher, {TEACHER_STEPS} steps")
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("network evaluations per sample (NFE)")
    axis.set_ylabel("FID (95% bootstrap interval)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, help="an sd-train checkpoint (default: train the default MNIST model)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/few_step"))
    parser.add_argument("--nfe", type=int, nargs="+", default=[1, 2, 4, 8], help="powers of two")
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--teacher-steps", type=int, default=6000, help="sd-train trainer.max_steps")
    parser.add_argument("--distill-steps", type=int, default=2000, help="sd-distill trainer.max_steps per method")
    parser.add_argument("--num-pairs", type=int, default=4096, help="reflow pairs per round")
    parser.add_argument("--reflow-rounds", type=int, default=1)
    parser.add_argument("--pair-steps", type=int, default=50, help="DDIM steps that draw each reflow pair")
    parser.add_argument("--num-samples", type=int, default=1000, help="generated images per cell")
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples behind each interval")
    parser.add_argument("--teacher-override", nargs="*", default=[], help="extra sd-train overrides")
    parser.add_argument("--distill-override", nargs="*", default=[], help="extra sd-distill overrides")
    args = parser.parse_args(argv)
    if any(n < 1 or n & (n - 1) for n in args.nfe):
        parser.error("--nfe takes powers of two (progressive distillation halves the steps)")
    args.nfe = sorted(set(args.nfe))
    out = args.out
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    costs_path = out / "costs.json"
    costs = json.loads(costs_path.read_text()) if costs_path.is_file() else {}
    results_path = out / "results.csv"
    done = {(row["method"], int(row["nfe"])) for row in read_results(results_path)}

    teacher_ckpt = args.teacher or train_teacher(args, runs, costs)
    costs_path.write_text(json.dumps(costs, indent=2))
    teacher = load_module(teacher_ckpt)
    evaluate = Evaluator(teacher, args, out)

    def record(method: str, nfe: int, module, sampler, checkpoint: Path, cost, note: str = "") -> None:
        if (method, nfe) in done:
            return
        row = {"method": method, "nfe": nfe, "checkpoint": str(checkpoint), "note": note,
               "train_cpu_minutes": "" if cost is None else cost, **evaluate(module, sampler, f"{method}_nfe{nfe}")}
        append_result(results_path, row, COLUMNS)
        done.add((method, nfe))
        print(f"{method:>14} NFE {nfe:>3}: FID {interval(row)}", flush=True)

    teacher_cost = costs.get("teacher")
    record("teacher", TEACHER_STEPS, teacher, baseline_sampler("ddim", TEACHER_STEPS, teacher.process), teacher_ckpt,
           teacher_cost)
    for name in BASELINES:
        for nfe in args.nfe:
            record(name, nfe, teacher, baseline_sampler(name, nfe, teacher.process), teacher_ckpt, 0.0,
                   "the teacher, no training")
    for method in args.methods:
        folder = distil(method, teacher_ckpt, args, runs, costs)
        costs_path.write_text(json.dumps(costs, indent=2))
        cost = json.loads((folder / "metrics.json").read_text())["train_cpu_minutes"]
        for nfe in args.nfe:
            checkpoint = student_for(method, folder, nfe, args)
            student = load_module(checkpoint)
            record(method, nfe, student, with_steps(student.sampler, nfe), checkpoint, cost)

    rows = read_results(results_path)
    write_table(rows, args.nfe, out / "results.md")
    plot(rows, out / "fid_vs_nfe.png")
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
