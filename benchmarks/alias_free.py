"""Alias-free UNet versions 0-3 (issue 13; Anjum et al. 2024, arXiv 2411.09174): training-step cost and quality at equal wall clock.

``speed``: one training step (forward, ε-MSE, backward, Adam) of ``model=unet_alias_free`` versions 0-3 on the
default 16x16 config under bf16 autocast, the versions interleaved round by round in one process so drift hits
all alike; prints the median step time of each and the ratios version/version 0 (targets: v1 ≤ 1.3, v3 ≤ 2.5).

``study``: versions × seeds × {mnist16, mnist_m32}, each trained through ``sd-train``'s pipeline for the same
wall clock, then FID (the default features), ``eq_t``, ``eq_r``, ``eq_r_generation``, training images/s and
parameters. The budget is either ``--budget-seconds`` of live wall clock (``trainer.max_time``, constant learning
rate), fair only on an otherwise idle machine, or ``--budget-steps N --step-ratios r0 r1 r2 r3``: version v trains
round(N · r0 / rv) steps, where rv is its step time measured by ``speed`` on an idle machine, so that every
version gets the wall clock of N version-0 steps however loaded the machine is while the study runs. One JSON line per finished run in ``<out>/runs.jsonl``
(a rerun skips finished runs: resumable); a markdown table (mean and t interval over seeds, the paired FID difference
to version 0) and a plot of FID and the equivariance PSNRs against the version are written from every line there;
``summary --out A B --to C`` rewrites them from several study folders.

    python benchmarks/alias_free.py speed
    python benchmarks/alias_free.py study --budget-seconds 600 --seeds 0 1 2 --out benchmarks/results/alias_free
    python benchmarks/alias_free.py study --budget-steps 2000 --step-ratios 1 1.09 2.07 2.14 --datasets mnist16
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from matplotlib.figure import Figure
from omegaconf import open_dict

from spectral_diffusion.cli import CONFIG_DIR
from spectral_diffusion.evaluation.compare import t_interval
from spectral_diffusion.evaluation.equivariance import model_equivariance
from spectral_diffusion.pipeline import load_module, train

VERSIONS = (0, 1, 2, 3)
DATASETS = {"mnist16": ["data=mnist"], "mnist_m32": ["data=mnist_m"]}


def compose_train(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name="train", overrides=["model=unet_alias_free", *overrides])


def step_seconds(versions, rounds: int, steps: int, batch_size: int, device: str,
                 dataset: str = "mnist16") -> dict[int, list[float]]:
    """Per version, the mean seconds of one training step in each round (versions interleaved per round)."""
    cfg = compose_train(DATASETS[dataset])
    shape = (batch_size, cfg.data.source.channels, cfg.data.source.image_size, cfg.data.source.image_size)
    models, optimizers = {}, {}
    for version in versions:
        node = cfg.model.copy()
        with open_dict(node):
            node.version = version
        torch.manual_seed(0)
        models[version] = instantiate(node).to(device)
        optimizers[version] = torch.optim.Adam(models[version].parameters(), lr=1e-4)
    x, t = torch.randn(shape, device=device), torch.rand(batch_size, device=device) * 1000

    def one_step(version: int) -> None:
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            loss = (models[version](x, t).float() - x).square().mean()
        optimizers[version].zero_grad(set_to_none=True)
        loss.backward()
        optimizers[version].step()

    def synchronize() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    times: dict[int, list[float]] = {version: [] for version in versions}
    for version in versions:  # warm-up
        for _ in range(3):
            one_step(version)
    for _ in range(rounds):
        for version in versions:
            synchronize()
            started = time.perf_counter()
            for _ in range(steps):
                one_step(version)
            synchronize()
            times[version].append((time.perf_counter() - started) / steps)
        print("round:", ", ".join(f"v{version} {1000 * values[-1]:.0f} ms" for version, values in times.items()),
              flush=True)
    return times


def run_speed(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    times = step_seconds(VERSIONS, args.rounds, args.steps, args.batch_size, args.device, args.dataset)
    median = {version: statistics.median(values) for version, values in times.items()}
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch_size} rounds={args.rounds} "
          f"steps/round={args.steps} (bf16 autocast, model=unet_alias_free, {args.dataset})")
    for version in VERSIONS:
        print(f"version {version}: {1000 * median[version]:.1f} ms/step, "
              f"ratio to version 0: {median[version] / median[0]:.2f}")
    print(f"version1/version0 = {median[1] / median[0]:.2f} (target <= 1.3); "
          f"version3/version0 = {median[3] / median[0]:.2f} (target <= 2.5)")


def run_key(dataset: str, version: int, seed: int) -> str:
    return f"{dataset}_v{version}_s{seed}"


def finished_runs(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {run["key"]: run for run in runs}


def lightning_duration(seconds: int) -> str:
    """``seconds`` as Lightning's ``max_time`` string DD:HH:MM:SS."""
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{seconds:02d}"


def study_one(dataset: str, version: int, seed: int, args, out: Path) -> dict:
    run_dir = out / run_key(dataset, version, seed)
    if args.budget_steps:
        steps = round(args.budget_steps * args.step_ratios[0] / args.step_ratios[version])
        budget = {"budget_steps": steps}
        limits = [f"trainer.max_steps={steps}"]
    else:
        seconds = int(args.budget_seconds)
        budget = {"budget_seconds": seconds}
        limits = [f"+trainer.max_time='{lightning_duration(seconds)}'", "trainer.max_steps=100000000"]
    overrides = [*DATASETS[dataset], f"model.version={version}", f"seed={seed}", "~logger", "~callbacks.lr_monitor",
                 *limits, "scheduler=constant",
                 "trainer.enable_progress_bar=false",
                 f"trainer.val_check_interval={args.val_check_interval}", "trainer.accelerator=cpu" if args.cpu else "",
                 f"evaluation.num_samples={args.num_samples}", "evaluation.battery=false",
                 "evaluation.timestep_bins=0", f"sampler.steps={args.sampler_steps}", *args.override]
    cfg = compose_train([item for item in overrides if item])
    with open_dict(cfg):
        cfg.paths.root_dir = str(out)
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.summary_csv = str(out / "summary.csv")
    metrics = train(cfg)
    fid_key = next(key for key in metrics if key.startswith("fid_") and "floor" not in key)
    module = load_module(run_dir / "checkpoints" / "last.ckpt")
    images = instantiate(cfg.data).val_images[: args.eq_images]
    equivariance, _ = model_equivariance(module, images, bins=args.eq_bins, generation_samples=args.eq_images,
                                         steps=args.sampler_steps, seed=seed)
    return {"key": run_key(dataset, version, seed), "dataset": dataset, "version": version, "seed": seed,
            **budget, "fid": metrics[fid_key], "fid_key": fid_key,
            "eq_t": equivariance["eq_t"], "eq_r": equivariance["eq_r"],
            "eq_r_generation": equivariance["eq_r_generation"],
            "train_images_per_second": metrics["train_images_per_second"], "global_step": metrics["global_step"],
            "num_parameters": metrics["num_parameters"]}


def summarise(runs: list[dict], out: Path, level: float = 0.95) -> str:
    """``alias_free.md`` and ``alias_free.png`` from the finished runs: per data set and version the mean over seeds
    with its Student t interval at ``level`` (``compare.t_interval``), and the FID difference to version 0 with the
    paired t interval over the seeds both ran (same seed: same initial weights, data order and sample seeds)."""
    columns = ["fid", "eq_t", "eq_r", "eq_r_generation"]
    pct = f"{level:.0%}"
    lines = ["| data | version | seeds | steps | " + " | ".join(f"{c} [{pct}]" for c in columns)
             + f" | Δfid vs v0 [{pct}, paired] | training img/s | parameters |",
             "|---|---|---|---|" + "---|" * len(columns) + "---|---|---|"]
    figure = Figure(figsize=(13, 3.4))
    axes = {name: figure.add_subplot(1, len(columns), index + 1) for index, name in enumerate(columns)}
    for dataset in DATASETS:
        by_version = {version: sorted((run for run in runs if run["dataset"] == dataset and run["version"] == version),
                                      key=lambda run: run["seed"]) for version in VERSIONS}
        points = {name: [] for name in columns}
        for version, group in by_version.items():
            if not group:
                continue
            cells = []
            for column in columns:
                values = np.array([run[column] for run in group], dtype=float)
                low, high = t_interval(values, level)
                cells.append(f"{values.mean():.2f} [{low:.2f}, {high:.2f}]")
                points[column].append((version, values.mean(), low, high))
            reference = {run["seed"]: run["fid"] for run in by_version[0]}
            paired = np.array([run["fid"] - reference[run["seed"]] for run in group if run["seed"] in reference])
            if version == 0 or len(paired) == 0:
                delta = "–"
            else:
                low, high = t_interval(paired, level)
                delta = f"{paired.mean():+.2f} [{low:+.2f}, {high:+.2f}]"
            steps = sorted({run["budget_steps"] for run in group if run.get("budget_steps") is not None})
            # In --budget-steps mode the study shares the machine; its images/s are not the speed of the version.
            speed = "–" if steps else f"{statistics.fmean(run['train_images_per_second'] for run in group):.0f}"
            lines.append(f"| {dataset} | {version} | {len(group)} | {'/'.join(map(str, steps)) or '–'} | "
                         + " | ".join(cells) + f" | {delta} | {speed} | {group[0]['num_parameters']:,} |")
        for name, ax in axes.items():
            if points[name]:
                versions, means, lows, highs = map(np.array, zip(*points[name]))
                spread = np.nan_to_num(np.stack([means - lows, highs - means]))
                ax.errorbar(versions, means, yerr=spread, marker="o", capsize=3, label=dataset)
    for name, ax in axes.items():
        ax.set_xlabel("model.version")
        ax.set_ylabel(name + (" (dB)" if name.startswith("eq") else " (log scale)"))
        if name == "fid":
            ax.set_yscale("log")
        ax.set_xticks(list(VERSIONS))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(f"alias-free versions at equal wall clock: mean over seeds, {pct} t interval")
    figure.tight_layout()
    figure.savefig(out / "alias_free.png", dpi=120)
    table = "\n".join(lines)
    (out / "alias_free.md").write_text(table + "\n")
    return table


def run_study(args) -> None:
    if args.budget_steps is not None:
        if args.budget_steps < 1:
            raise SystemExit(f"--budget-steps={args.budget_steps} must be >= 1")
        if args.step_ratios is None or len(args.step_ratios) != len(VERSIONS) or min(args.step_ratios) <= 0:
            raise SystemExit("--budget-steps needs --step-ratios with one positive step time ratio per version "
                             f"{list(VERSIONS)}, as printed by `python benchmarks/alias_free.py speed`")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done = finished_runs(log)
    for seed in args.seeds:  # seeds outermost: a stopped study has whole seeds of every version
        for dataset in args.datasets:
            for version in args.versions:
                key = run_key(dataset, version, seed)
                if key in done:
                    print(f"{key}: done, skipped")
                    continue
                result = study_one(dataset, version, seed, args, out)
                with log.open("a") as handle:
                    handle.write(json.dumps(result) + "\n")
                done[key] = result
                print(json.dumps(result))
    print(summarise(list(finished_runs(log).values()), out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    speed = commands.add_parser("speed", help="step-time ratios of versions 0-3")
    speed.add_argument("--rounds", type=int, default=5)
    speed.add_argument("--steps", type=int, default=10)
    speed.add_argument("--batch-size", type=int, default=64)
    speed.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    speed.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    speed.add_argument("--dataset", default="mnist16", choices=list(DATASETS))
    study = commands.add_parser("study", help="quality at equal wall clock")
    study.add_argument("--budget-seconds", type=float, default=600)
    study.add_argument("--budget-steps", type=int, default=None,
                       help="version 0's training steps; the others get the same wall clock via --step-ratios")
    study.add_argument("--step-ratios", type=float, nargs="+", default=None,
                       help="step time of versions 0-3 relative to version 0, measured by `speed` on an idle machine")
    study.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    study.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    study.add_argument("--versions", type=int, nargs="+", default=list(VERSIONS), choices=VERSIONS)
    study.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    study.add_argument("--num-samples", type=int, default=1000)
    study.add_argument("--sampler-steps", type=int, default=50)
    study.add_argument("--eq-images", type=int, default=64)
    study.add_argument("--eq-bins", type=int, default=5)
    study.add_argument("--val-check-interval", type=int, default=1000)
    study.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    study.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    study.add_argument("--out", default="benchmarks/results/alias_free")
    summary = commands.add_parser("summary", help="rewrite alias_free.md/png of a study folder from its runs.jsonl")
    summary.add_argument("--out", nargs="+", required=True, help="study folders (their runs are pooled)")
    summary.add_argument("--to", default=None, help="where to write (default: the first --out)")
    summary.add_argument("--level", type=float, default=0.95)
    args = parser.parse_args()
    if args.command == "speed":
        run_speed(args)
    elif args.command == "study":
        run_study(args)
    else:
        folders = [Path(folder) for folder in args.out]
        missing = [str(folder) for folder in folders if not (folder / "runs.jsonl").is_file()]
        if missing:
            raise SystemExit(f"--out: no runs.jsonl in {', '.join(missing)}")
        runs = [run for folder in folders for run in finished_runs(folder / "runs.jsonl").values()]
        target = Path(args.to or folders[0])
        target.mkdir(parents=True, exist_ok=True)
        print(summarise(runs, target, args.level))


if __name__ == "__main__":
    main()
