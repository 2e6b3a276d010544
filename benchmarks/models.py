"""Backbones compared: parameters, training images/s, DDIM sampling s/image, and FID and spectral-slope
difference after equal wall-clock training.

    python benchmarks/models.py --out bench-models                         # six variants, 10 min each
    python benchmarks/models.py --jobs 2 --threads 1 --out bench-models    # two at a time (less fair)
    python benchmarks/models.py --models unet,unet_hybrid --budget-minutes 0.2 --out /tmp/b -- debug=default

Phase 1 (in this process, nothing else running): parameter count, median plain training step (forward
under the configured autocast, loss, backward, clipping, Adam, EMA; ``timing.time_plain_steps``) and
seconds per image of DDIM with 50 steps. Calibration: the step timed inside ``Trainer.fit``
(``timing.time_lightning_steps``) in a fresh process, ``--jobs`` copies at once.

Phase 2: one ``sd-train`` subprocess per model, each in its own run folder, with
``trainer.max_steps = budget / calibrated step`` (so that the learning-rate schedule completes) and
``trainer.max_time = (1 + slack) * budget`` as a hard cap, with the in-training sampling callbacks (sample
grid, spectral evaluation) off so that the budget goes to training. A run that trained less than
``(1 - tolerance) * budget``, or hit the cap before ``1 - 3 * tolerance`` of its max_steps, is kept as
``runs/<model>.attempt1`` and trained once more with max_steps from its own steps per second. With
``--jobs 1`` (the default) the calibration matches phase 2's conditions; with ``--jobs 2`` a run's speed
also depends on which model shares the machine.

Each run's metrics.json gives its images/s over the whole run (``train_images_per_second``, the table's
column), the FID, and the spectral slopes of the generated and held-out real images (the battery's
``spectral_slope_fake`` / ``spectral_slope_real``: β of P(f) ∝ |f|^−β, ``metrics.spectral.fit_spectral_slope``).
A run folder that already holds metrics.json is not trained again (resume). Results: results.csv,
results.md and results.png (FID and slope difference against steps trained) in ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from omegaconf import OmegaConf
from timing import compose_config, time_lightning_steps, time_plain_steps

VARIANTS: dict[str, list[str]] = {
    "unet_tiny": ["model=unet_tiny"],
    "unet": ["model=unet"],
    "unet_freq_attention": ["model=unet", "model.freq_attention=true"],
    "unet_spectral_complex": ["model=unet_spectral", "model.complex_mode=complex"],
    "unet_spectral_dual_real": ["model=unet_spectral", "model.complex_mode=dual_real"],
    "unet_hybrid": ["model=unet_hybrid"],
}
COLUMNS = ["model", "parameters", "train_images_per_s", "step_ms", "sample_s_per_image", "calibrated_step_ms",
           "budget_s", "max_steps", "steps_done", "train_seconds", "run_images_per_s", "fid_name", "fid",
           "slope_generated", "slope_real", "slope_difference"]


def measure(name: str, overrides: list[str], warmup: int, steps: int, sample_images: int) -> dict:
    """Phase 1: parameters, median step time, DDIM-50 seconds per image."""
    cfg = compose_config([*VARIANTS[name], *overrides, "sampler=ddim", "sampler.steps=50"])
    times, components = time_plain_steps(cfg, warmup, steps)
    module, batch_size = components.module, components.datamodule.batch_size
    step = statistics.median(times)
    started = time.perf_counter()
    module.generate(sample_images, seed=0, batch_size=sample_images)
    sample_seconds = (time.perf_counter() - started) / sample_images
    return {"model": name, "parameters": module.num_parameters(), "train_images_per_s": batch_size / step,
            "step_ms": 1e3 * step, "sample_s_per_image": sample_seconds, "threads": torch.get_num_threads()}


def calibrated_step_ms(name: str, overrides: list[str], jobs: int, threads: int, warmup: int, steps: int) -> float:
    """Calibration: median step time of ``name`` inside ``Trainer.fit`` while ``jobs`` copies run at once."""
    command = [sys.executable, __file__, "--time-only", name, "--threads", str(threads), "--warmup", str(warmup),
               "--steps", str(steps), "--", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(jobs)]
    medians = []
    for process in processes:
        output, errors = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"calibration timing of {name} failed (exit {process.returncode}):\n{errors}")
        medians.append(json.loads(output.strip().splitlines()[-1])["step_ms"])
    return statistics.median(medians)


def sd_train(name: str, overrides: list[str], run_dir: Path, max_steps: int, max_seconds: float, threads: int,
             summary_csv: Path) -> dict:
    """One sd-train subprocess in ``run_dir`` (skipped when it already holds metrics.json); returns its
    metrics.json with the run's ``trainer.max_steps`` added."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        seconds = max(1, math.ceil(max_seconds))
        max_time = f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
        command = [sys.executable, "-m", "spectral_diffusion.cli.train", *VARIANTS[name], *overrides,
                   f"hydra.run.dir={run_dir}", f"trainer.max_steps={max_steps}", f"+trainer.max_time={max_time}",
                   f"paths.summary_csv={summary_csv}", "trainer.enable_progress_bar=false",
                   "~callbacks.sample_grid", "~callbacks.spectral_eval", "optimized_metric=fid"]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir.parent / f"{run_dir.name}.log", "w") as log:
            result = subprocess.run(command, check=False, env=env, stdout=log, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise RuntimeError(f"sd-train for {name} failed (exit {result.returncode}); see {log.name}")
    metrics = json.loads(metrics_path.read_text())
    metrics["max_steps"] = int(OmegaConf.load(run_dir / ".hydra" / "config.yaml").trainer.max_steps)
    return metrics


def train_run(name: str, overrides: list[str], runs_dir: Path, budget_s: float, step_ms: float, slack: float,
              tolerance: float, threads: int, summary_csv: Path) -> dict:
    """Phase 2 for one model: train with ``max_steps`` from the calibrated step time. A run that trained
    less than (1 - tolerance) of the budget, or hit the time cap before (1 - 3·tolerance) of max_steps
    (at the default 0.03, 91 % of the schedule, where the default cosine learning rate is 6.9 % of its peak
    against a final 5 %), is kept as ``<name>.attempt1`` and trained once more with max_steps from its
    own steps per second."""
    run_dir, first = runs_dir / name, runs_dir / f"{name}.attempt1"
    cap = (1.0 + slack) * budget_s
    if not first.is_dir():
        metrics = sd_train(name, overrides, run_dir, max(1, round(budget_s / (step_ms / 1e3))), cap, threads,
                           summary_csv)
        if (metrics["train_seconds"] >= (1.0 - tolerance) * budget_s
                and metrics["global_step"] >= (1.0 - 3.0 * tolerance) * metrics["max_steps"]):
            return metrics
        run_dir.rename(first)
        (runs_dir / f"{name}.log").rename(runs_dir / f"{name}.attempt1.log")
    earlier = json.loads((first / "metrics.json").read_text())
    steps_per_second = earlier["global_step"] / earlier["train_seconds"]
    max_steps = max(1, round(steps_per_second * budget_s * (1.0 + tolerance / 2)))
    print(f"{name}: attempt 1 trained {earlier['global_step']} steps in {earlier['train_seconds']:.0f} s; "
          f"again with max_steps={max_steps}", flush=True)
    return sd_train(name, overrides, run_dir, max_steps, cap, threads, summary_csv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}")
    parser.add_argument("--budget-minutes", type=float, default=10.0, help="training wall clock per model")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="trainings run concurrently")
    parser.add_argument("--out", type=Path, help="results folder (resumable); required")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per model")
    parser.add_argument("--sample-images", type=int, default=64)
    parser.add_argument("--slack", type=float, default=0.1,
                        help="trainer.max_time is (1 + slack) x the budget, a cap for runs slower than calibrated")
    parser.add_argument("--tolerance", type=float, default=0.03,
                        help="a run that trained less than (1 - tolerance) x the budget is trained again")
    parser.add_argument("--time-only", metavar="MODEL", help=argparse.SUPPRESS)  # calibration subprocess
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args()
    if args.slack < 0.0:
        parser.error(f"--slack must be >= 0, got {args.slack}")
    if not 0.0 <= args.tolerance < 1.0:
        parser.error(f"--tolerance must lie in [0, 1), got {args.tolerance}")
    if args.time_only:
        torch.set_num_threads(args.threads)
        cfg = compose_config([*VARIANTS[args.time_only], *args.overrides])
        times = time_lightning_steps(cfg, args.warmup, args.steps, accelerator=cfg.trainer.accelerator)
        print(json.dumps({"step_ms": 1e3 * statistics.median(times)}))
        return
    if args.out is None:
        parser.error("--out is required")
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"--models {unknown} unknown; choose from {list(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)

    phase1_path = args.out / "phase1.json"
    phase1 = json.loads(phase1_path.read_text()) if phase1_path.is_file() else {}
    for name in names:
        if phase1.get(name, {}).get("threads") != args.threads:  # absent, or measured with other threads
            phase1[name] = measure(name, args.overrides, args.warmup, args.steps, args.sample_images)
            phase1_path.write_text(json.dumps(phase1, indent=2) + "\n")
        print(f"{name:26s} {phase1[name]['parameters']:>9,d} params  {phase1[name]['train_images_per_s']:8.1f} img/s"
              f"  {phase1[name]['sample_s_per_image'] * 1e3:8.2f} ms/img (DDIM 50)", flush=True)
    key = f"lightning_step_ms_jobs{args.jobs}_threads{args.threads}"
    for name in names:
        if key not in phase1[name]:
            phase1[name][key] = calibrated_step_ms(name, args.overrides, args.jobs, args.threads, args.warmup,
                                                   args.steps)
            phase1_path.write_text(json.dumps(phase1, indent=2) + "\n")
        print(f"{name:26s} step {phase1[name]['step_ms']:7.1f} ms plain, {phase1[name][key]:7.1f} ms in Trainer.fit "
              f"with {args.jobs} at once", flush=True)

    budget_s = 60.0 * args.budget_minutes
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {name: pool.submit(train_run, name, args.overrides, args.out / "runs", budget_s,
                                     phase1[name][key], args.slack, args.tolerance, args.threads,
                                     args.out / "summary.csv")
                   for name in names}
        runs = {name: future.result() for name, future in futures.items()}

    rows = []
    for name in names:
        metrics = runs[name]
        rows.append({**phase1[name], "calibrated_step_ms": phase1[name][key], "budget_s": budget_s,
                     "max_steps": metrics["max_steps"],
                     "steps_done": metrics["global_step"], "train_seconds": metrics["train_seconds"],
                     "run_images_per_s": metrics["train_images_per_second"],
                     "fid_name": metrics.get("objective_name", ""), "fid": metrics.get("objective", math.nan),
                     "slope_generated": metrics.get("spectral_slope_fake", math.nan),
                     "slope_real": metrics.get("spectral_slope_real", math.nan),
                     "slope_difference": metrics.get("spectral_slope_fake", math.nan)
                     - metrics.get("spectral_slope_real", math.nan)})
    write_results(args.out, rows)


def write_results(out: Path, rows: list[dict]) -> None:
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({key: row[key] for key in COLUMNS} for row in rows)
    fid_name = rows[0]["fid_name"] if rows else "fid"
    header = (f"| model | parameters | training img/s | DDIM-50 ms/img | steps done / planned | minutes trained | "
              f"{fid_name} | slope diff |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['parameters']:,d} | {row['run_images_per_s']:.0f} | "
                     f"{1e3 * row['sample_s_per_image']:.1f} | {row['steps_done']:,d} / {row['max_steps']:,d} | "
                     f"{row['train_seconds'] / 60:.1f} | {row['fid']:.2f} | {row['slope_difference']:+.3f} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, out / "results.png")


def plot(rows: list[dict], path: Path) -> None:
    """FID and spectral-slope difference against the training steps each model fitted into the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.8), constrained_layout=True)
    for axis, key, label in ((axes[0], "fid", rows[0]["fid_name"] if rows else "FID"),
                             (axes[1], "slope_difference", "spectral slope, generated − real")):
        for row in rows:
            axis.scatter(row["steps_done"], row[key])
            axis.annotate(row["model"], (row["steps_done"], row[key]), fontsize=7, xytext=(4, 3),
                          textcoords="offset points")
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        axis.margins(0.2)
        axis.set_xlabel(f"training steps in the {rows[0]['budget_s'] / 60:g}-minute budget" if rows
                        else "training steps")
        axis.set_ylabel(label)
    axes[1].axhline(0.0, color="grey", linewidth=0.8)
    figure.savefig(path, dpi=150)
    plt.close(figure)


if __name__ == "__main__":
    main()
